/**
 * verify_and_map (issue 18): a verified client certificate names its user,
 * by nats-server 2.9's rules and in its order (email SANs, DNS SANs, URIs,
 * the subject as a distinguished name, then as Go writes it), on the NATS
 * listener (nats v2, @nats-io/transport-node v3) and the Kafka listener
 * (KafkaJS, kcat), where the certificate is the Kafka principal and no
 * SASL is needed. Certificates are made here with openssl.
 *
 * The expected strings and mappings were taken side by side from Debian's
 * nats-server 2.9.10 (`-D` logs "User in cert [...]" and "Using ... for
 * auth", and /connz?auth=1's tls_peer_certs) on the same certificates.
 */

import { describe, test, before, after } from "node:test";
import assert from "node:assert/strict";
import { X509Certificate } from "node:crypto";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import kafkajs from "kafkajs";
import { connect as connectV2 } from "nats";
import { connect as connectV3 } from "@nats-io/transport-node";
import { startServer, type NagareServer, type ServerOptions } from "../src/index.js";
import { parseConf } from "../src/server/conf-parser.js";
import { optionsFromConf } from "../src/server/conf-options.js";
import { certificateNames, goDomainComponents, goNameString, goSubjectString } from "../src/core/x509-names.js";
import { CertificateMap, dnEqual, dnSameRdns, parseDn } from "../src/core/tls-map.js";
import { clientCertificate, makePki, type Pki } from "./helpers/pki.js";
import { kcat } from "./helpers/kafka.js";
import { dec, enc } from "./helpers/clients.js";

const { Kafka, logLevel } = kafkajs;

const der = (pem: string): Buffer => new X509Certificate(readFileSync(pem)).raw;

describe("reading distinguished names as nats-server does", () => {
  test("user names: spaces around types and values, escapes, hex bytes, multi-valued RDNs; names that are no DN", () => {
    assert.deepEqual(parseDn("CN=alice, O=acme , C=US"), [[{ type: "CN", value: "alice" }], [{ type: "O", value: "acme" }], [{ type: "C", value: "US" }]]);
    assert.deepEqual(parseDn("CN=a\\,b\\+c\\20d\\\\"), [[{ type: "CN", value: "a,b+c d\\" }]]);
    assert.deepEqual(parseDn("CN=\\C3\\B1"), [[{ type: "CN", value: Buffer.from("ñ").toString("latin1") }]]);
    assert.deepEqual(parseDn("OU=ops+CN=erin,O=acme"), [
      [
        { type: "OU", value: "ops" },
        { type: "CN", value: "erin" },
      ],
      [{ type: "O", value: "acme" }],
    ]);
    assert.deepEqual(parseDn("CN=trail\\ "), [[{ type: "CN", value: "trail " }]]);
    for (const notADn of ["alice", "bob@example.com", "spiffe://x/y", "CN=#04024869", "CN=a\\zz", ",CN=a"]) assert.equal(parseDn(notADn), null, notADn);
  });

  test("equality: RDN by RDN with types in any case and exact values; reordered RDNs only by the second rule", () => {
    const cert = parseDn("CN=alice,O=acme,C=US")!;
    assert.ok(dnEqual(parseDn("cn=alice, o=acme, c=US")!, cert));
    assert.ok(!dnEqual(parseDn("CN=Alice,O=acme,C=US")!, cert));
    assert.ok(!dnEqual(parseDn("C=US,O=acme,CN=alice")!, cert));
    assert.ok(dnSameRdns(parseDn("C=US,O=acme,CN=alice")!, cert));
    assert.ok(!dnSameRdns(parseDn("C=US,O=acme")!, cert));
    assert.ok(dnEqual(parseDn("CN=erin+OU=ops,O=acme")!, parseDn("OU=ops+CN=erin,O=acme")!));
  });
});

describe("client certificates", () => {
  let pki: Pki;
  const certs: Record<string, { cert: string; key: string }> = {};
  before(() => {
    pki = makePki();
    certs.alice = clientCertificate(pki, "alice", "/CN=alice/O=acme/C=US");
    certs.bob = clientCertificate(pki, "bob", "/C=US/ST=IDF/L=Paris/street=Main St/postalCode=75001/O=acme/OU=zeta/OU=alpha/CN=bob/serialNumber=42");
    certs.odd = clientCertificate(pki, "odd", '/CN= lead, comma\\+plus"q\\\\back<lt>gt;semi#hash trail /O=#start');
    certs.carol = clientCertificate(pki, "carol", "/DC=org/DC=example/UID=carol/CN=carol/O=acme");
    certs.dave = clientCertificate(pki, "dave", "/CN=dave/emailAddress=dave@example.com/O=acme", { san: "email:dave@alt.example.com,DNS:dave.example.com,URI:spiffe://example.org/dave" });
    certs.erin = clientCertificate(pki, "erin", "/O=acme/CN=erin+OU=ops", { multiValue: true });
    certs.nandu = clientCertificate(pki, "nandu", "/CN=ñandú/O=acme");
    certs.frank = clientCertificate(pki, "frank", "/CN=frank/CN=frank2/O=b/O=a");
    certs.gina = clientCertificate(pki, "gina", "/O=acme/CN=gina", { san: "DNS:gina.example.com,DNS:gina2.example.com" });
  });
  after(() => rmSync(pki.dir, { recursive: true, force: true }));

  test("the subject as Go writes it: fixed order, one RDN per type, RFC 2253 escapes; DCs apart; other attributes only in the full name", () => {
    const subject = (name: string): string => goSubjectString(certificateNames(der(certs[name].cert)).subject);
    assert.equal(subject("alice"), "CN=alice,O=acme,C=US");
    assert.equal(subject("bob"), "SERIALNUMBER=42,CN=bob,OU=zeta+OU=alpha,O=acme,POSTALCODE=75001,STREET=Main St,L=Paris,ST=IDF,C=US");
    assert.equal(subject("odd"), 'CN=\\ lead\\, comma\\+plus\\"q\\\\back\\<lt\\>gt\\;semi#hash trail\\ ,O=\\#start');
    assert.equal(subject("carol"), "CN=carol,O=acme");
    assert.equal(goDomainComponents(certificateNames(der(certs.carol.cert)).subject), "DC=org,DC=example");
    assert.equal(subject("erin"), "CN=erin,OU=ops,O=acme");
    assert.equal(subject("nandu"), "CN=ñandú,O=acme");
    assert.equal(subject("frank"), "CN=frank2,O=b+O=a");
    assert.equal(goNameString(certificateNames(der(certs.carol.cert)).subject), "CN=carol,O=acme,0.9.2342.19200300.100.1.1=#13056361726f6c,0.9.2342.19200300.100.1.25=#13076578616d706c65,0.9.2342.19200300.100.1.25=#13036f7267");
    assert.equal(goNameString(certificateNames(der(certs.dave.cert)).subject), "CN=dave,O=acme,1.2.840.113549.1.9.1=#0c1064617665406578616d706c652e636f6d");
    const dave = certificateNames(der(certs.dave.cert));
    assert.deepEqual([dave.emails, dave.dnsNames, dave.uris], [["dave@alt.example.com"], ["dave.example.com"], ["spiffe://example.org/dave"]]);
  });

  test("which user each certificate maps to, and in what order the names are tried", () => {
    const mapper = (users: string[]): ((name: string) => string | null) => {
      const map = new CertificateMap(users, (n) => users.includes(n));
      return (name) => map.match(der(certs[name].cert))?.user ?? null;
    };
    // The same users and certificates gave the same answers from nats-server 2.9.10.
    const m = mapper([
      "CN=alice, O=acme, C=US",
      "SERIALNUMBER=42,CN=bob,OU=zeta+OU=alpha,O=acme,POSTALCODE=75001,STREET=Main St,L=Paris,ST=IDF,C=US",
      "CN=carol,O=acme,DC=org,DC=example",
      "dave@alt.example.com",
      "OU=ops+CN=erin,O=acme",
      "CN=ñandú,O=acme",
      "CN=frank2,O=b+O=a",
      "gina.example.com",
    ]);
    assert.deepEqual(
      ["alice", "bob", "odd", "carol", "dave", "erin", "nandu", "frank", "gina"].map(m),
      [
        "CN=alice, O=acme, C=US", // distinguished name match, RDNs reordered
        "SERIALNUMBER=42,CN=bob,OU=zeta+OU=alpha,O=acme,POSTALCODE=75001,STREET=Main St,L=Paris,ST=IDF,C=US", // Go's subject string
        null,
        "CN=carol,O=acme,DC=org,DC=example", // subject and domain components (UID rules out the DN match)
        "dave@alt.example.com", // email SAN
        "OU=ops+CN=erin,O=acme", // DN match, attributes of an RDN in any order
        "CN=ñandú,O=acme",
        "CN=frank2,O=b+O=a",
        "gina.example.com", // DNS SAN
      ],
    );
    const reordered = mapper(["C=US,O=acme,CN=alice", "cn=Gina,o=acme", "CN=\\43arol,O=acme,DC=org,DC=example", "dave@example.com"]);
    assert.equal(reordered("alice"), "C=US,O=acme,CN=alice"); // the DN as openssl writes it: the last RDN of the DER first
    assert.equal(reordered("gina"), null); // values are compared exactly
    assert.equal(reordered("carol"), null); // the DC form is compared as a string
    assert.equal(reordered("dave"), null); // an email in the subject is not an email SAN
    // Email, then DNS name, then URI, then the subject.
    const all = ["CN=dave,O=acme", "spiffe://example.org/dave", "dave.example.com", "dave@alt.example.com"];
    for (let i = all.length; i > 0; i--) assert.equal(mapper(all.slice(0, i))("dave"), all[i - 1]);
    // The exact DN before a reordered one (here Go's subject order), whatever the configuration's order.
    assert.equal(mapper(["CN=alice,O=acme,C=US", "C=US,O=acme,CN=alice"])("alice"), "C=US,O=acme,CN=alice");
    assert.equal(mapper(["CN=alice,O=acme,C=US"])("alice"), "CN=alice,O=acme,C=US");
    assert.equal(new CertificateMap(["x"], () => true).match(Buffer.from("not a certificate")), null);
  });
});

/** The users of the servers below: certificate users (no password), one with a password, one plain password user. */
const USERS = [
  { user: "O=nagare,CN=writer", permissions: { publish: { allow: ["orders.>"] }, subscribe: { allow: ["_INBOX.>"] } } },
  { user: "reader@example.com", permissions: { publish: { deny: [">"] }, subscribe: { allow: ["orders.>"] } } },
  { user: "CN=locked,O=nagare", password: "locked-pw" },
  { user: "alice", password: "alice-pw" },
];

describe("verify_and_map on the NATS listener", () => {
  let pki: Pki;
  let srv: NagareServer;
  const certs: Record<string, { cert: string; key: string }> = {};
  before(async () => {
    pki = makePki();
    certs.writer = clientCertificate(pki, "writer", "/O=nagare/CN=writer");
    certs.reader = clientCertificate(pki, "reader", "/CN=someone/O=nagare", { san: "email:reader@example.com" });
    certs.locked = clientCertificate(pki, "locked", "/O=nagare/CN=locked");
    certs.stranger = clientCertificate(pki, "stranger", "/O=nagare/CN=stranger");
    srv = await startServer({ port: 0, httpPort: 0, tls: { certFile: pki.serverCert, keyFile: pki.serverKey, caFile: pki.ca, verifyAndMap: true }, authorization: { users: USERS } });
  });
  after(async () => {
    await srv.close();
    rmSync(pki.dir, { recursive: true, force: true });
  });

  const tlsOf = (who: string): { caFile: string; certFile: string; keyFile: string } => ({ caFile: pki.ca, certFile: certs[who].cert, keyFile: certs[who].key });
  const connz = async (): Promise<Array<Record<string, unknown>>> => ((await (await fetch(`http://127.0.0.1:${srv.httpPort}/connz?auth=1`)).json()) as { connections: Array<Record<string, unknown>> }).connections;

  test("nats v2 and v3 are the users their certificates name, with those users' permissions; /connz shows them", async () => {
    const writer = await connectV2({ servers: srv.url, tls: tlsOf("writer") });
    const reader = await connectV3({ servers: srv.url, tls: tlsOf("reader") });
    try {
      assert.equal(writer.info?.tls_verify, true);
      const sub = reader.subscribe("orders.>", { max: 1 });
      await reader.flush();
      writer.publish("orders.new", enc("by certificate"));
      for await (const m of sub) assert.equal(dec(m.data), "by certificate");
      // The writer may not subscribe outside _INBOX.>: its user's permissions hold.
      const denied = writer.subscribe("orders.>");
      await assert.rejects(
        (async () => {
          for await (const _ of denied) assert.fail("delivered to a denied subscription");
        })(),
        /Permissions Violation for Subscription to "orders\.>"/,
      );
      const users = (await connz()).map((c) => c.authorized_user).sort();
      assert.deepEqual(users, ["O=nagare,CN=writer", "reader@example.com"]);
    } finally {
      await writer.close();
      await reader.close();
    }
  });

  test("a certificate that names no user gets Authorization Violation; so does a password user's name and password", async () => {
    await assert.rejects(connectV2({ servers: srv.url, tls: tlsOf("stranger"), reconnect: false }), /Authorization Violation/);
    await assert.rejects(connectV3({ servers: srv.url, tls: tlsOf("stranger"), reconnect: false }), /Authorization Violation/);
    // Under verify_and_map the certificate says who the client is: a name and password in CONNECT do not.
    await assert.rejects(connectV2({ servers: srv.url, tls: tlsOf("stranger"), user: "alice", pass: "alice-pw", reconnect: false }), /Authorization Violation/);
    // Without a certificate there is no handshake at all (verify_and_map implies verify).
    await assert.rejects(connectV3({ servers: srv.url, tls: { caFile: pki.ca }, reconnect: false, timeout: 5000 }).then((c) => c.flush().finally(() => c.close())));
  });

  test("a certificate user with a password must also send it; a name in CONNECT does not change who the certificate is", async () => {
    await assert.rejects(connectV2({ servers: srv.url, tls: tlsOf("locked"), reconnect: false }), /Authorization Violation/);
    await assert.rejects(connectV2({ servers: srv.url, tls: tlsOf("locked"), user: "CN=locked,O=nagare", pass: "wrong", reconnect: false }), /Authorization Violation/);
    const locked = await connectV2({ servers: srv.url, tls: tlsOf("locked"), user: "whoever", pass: "locked-pw" });
    // A user without a password may not send one.
    await assert.rejects(connectV3({ servers: srv.url, tls: tlsOf("writer"), user: "x", pass: "y", reconnect: false }), /Authorization Violation/);
    const writer = await connectV3({ servers: srv.url, tls: tlsOf("writer"), user: "reader@example.com" });
    try {
      const users = (await connz()).map((c) => c.authorized_user).sort();
      assert.deepEqual(users, ["CN=locked,O=nagare", "O=nagare,CN=writer"]);
    } finally {
      await locked.close();
      await writer.close();
    }
  });
});

describe("verify_and_map configuration", () => {
  const conf = (text: string): ServerOptions => optionsFromConf(parseConf(text));
  const problems = (text: string): string[] => {
    try {
      conf(text);
    } catch (err) {
      return (err as { problems?: Array<{ message: string }> }).problems?.map((p) => p.message) ?? [(err as Error).message];
    }
    assert.fail("the configuration was accepted");
  };
  let pki: Pki;
  before(() => {
    pki = makePki();
  });
  after(() => rmSync(pki.dir, { recursive: true, force: true }));
  const tlsBlock = (): string => `tls {\n  cert_file: "${pki.serverCert}"\n  key_file: "${pki.serverKey}"\n  ca_file: "${pki.ca}"\n  verify_and_map: true\n}\n`;

  test("users without a password are read with verify_and_map; verify_and_map implies verify", () => {
    const o = conf(`${tlsBlock()}authorization { users = [ {user: "CN=app,O=acme"}, {user: "ops@example.com", permissions: {publish: "ops.>"}} ] }\naccounts { A: { users: [ {user: "CN=tenant,O=a"} ] } }\n`);
    assert.equal(o.tls?.verifyAndMap, true);
    assert.deepEqual(o.authorization?.users?.map((u) => u.user), ["CN=app,O=acme", "ops@example.com"]);
    assert.equal(conf(`${tlsBlock().replace("verify_and_map: true", "verify_and_map: false")}authorization { user: a, password: b }\n`).tls?.verifyAndMap, false);
  });

  test("what verify_and_map cannot honour stops the start at its line and column", () => {
    // The refused user's own error only (an outside test found a misleading "needs users" said first).
    assert.deepEqual(problems(`authorization {\n  users = [ {user: "CN=app"} ]\n}\n`), [
      "line 2, column 3: authorization.users[0]: user CN=app needs a password (only the no_auth_user, and users that client certificates name, with tls { verify_and_map: true }, may go without)",
    ]);
    assert.deepEqual(problems(tlsBlock()), ["line 5, column 3: tls.verify_and_map: needs users (in authorization or accounts) for certificates to map to"]);
    assert.deepEqual(problems(`${tlsBlock()}authorization { token: s3cret }\n`), ["line 5, column 3: tls.verify_and_map: cannot be used with a token: it maps certificates to users"]);
    assert.deepEqual(problems(`${tlsBlock()}authorization { users = [ {user: "CN=app"} ] }\nno_auth_user: "CN=app"\n`), ["line 5, column 3: tls.verify_and_map: cannot be used with no_auth_user: every client is the user its certificate names"]);
    assert.deepEqual(problems(`${tlsBlock()}authorization { users = [ {user: "CN=app,O=acme"}, {user: "cn=app, o=acme"} ] }\n`), ['line 5, column 3: tls.verify_and_map: users "CN=app,O=acme" and "cn=app, o=acme" are the same distinguished name']);
    // On the Kafka listener: users may go without a password, and the same checks point into kafka.tls.
    const kafkaTls = `kafka {\n  port: -1\n  ${tlsBlock().replace(/\n/g, "\n  ")}}\n`;
    assert.equal(conf(`${kafkaTls}authorization { users = [ {user: "CN=app"} ] }\n`).kafka?.tls?.verifyAndMap, true);
    assert.deepEqual(problems(kafkaTls), ["line 7, column 5: kafka.tls.verify_and_map: needs users (in authorization or accounts) for certificates to map to"]);
  });

  test("the options say the same to an embedding program", async () => {
    const tls = { certFile: pki.serverCert, keyFile: pki.serverKey, caFile: pki.ca, verifyAndMap: true };
    await assert.rejects(startServer({ port: 0, authorization: { users: [{ user: "CN=app" }] } }), /option authorization\.users \(CN=app\) needs a password/);
    await assert.rejects(startServer({ port: 0, tls }), /option tls\.verifyAndMap needs users/);
    await assert.rejects(startServer({ port: 0, tls, authorization: { users: [{ user: "CN=a,O=b" }, { user: "CN=a, O=b" }] } }), /same distinguished name/);
    await assert.rejects(startServer({ port: 0, kafka: { port: 0, tls } }), /option kafka\.tls\.verifyAndMap needs users/);
  });
});

describe("verify_and_map on the Kafka listener", () => {
  let pki: Pki;
  let srv: NagareServer;
  let options: ServerOptions;
  let dir: string;
  const certs: Record<string, { cert: string; key: string }> = {};
  before(async () => {
    pki = makePki();
    certs.writer = clientCertificate(pki, "kwriter", "/O=nagare/CN=writer");
    certs.reader = clientCertificate(pki, "kreader", "/CN=someone/O=nagare", { san: "email:reader@example.com" });
    certs.locked = clientCertificate(pki, "klocked", "/O=nagare/CN=locked");
    certs.stranger = clientCertificate(pki, "kstranger", "/O=nagare/CN=stranger");
    dir = mkdtempSync(join(tmpdir(), "nagare-kmap-"));
    const users = [
      { user: "CN=writer,O=nagare", permissions: { publish: { allow: ["orders", "orders.>", "$JS.API.>"] }, subscribe: { allow: ["orders", "orders.>", "_INBOX.>"] } } },
      { user: "reader@example.com", permissions: { publish: { deny: [">"] }, subscribe: { allow: ["orders", "orders.>"] } } },
      { user: "CN=locked,O=nagare", password: "locked-pw" },
    ];
    options = {
      port: 0,
      httpPort: 0,
      storeDir: dir,
      authorization: { users },
      kafka: { port: 0, initialRebalanceDelayMs: 100, tls: { certFile: pki.serverCert, keyFile: pki.serverKey, caFile: pki.ca, verifyAndMap: true } },
    };
    srv = await startServer(options);
  });
  after(async () => {
    await srv.close();
    rmSync(dir, { recursive: true, force: true });
    rmSync(pki.dir, { recursive: true, force: true });
  });

  const kafka = (who: string): InstanceType<typeof Kafka> =>
    new Kafka({
      clientId: `kmap-${who}`,
      brokers: [`127.0.0.1:${srv.kafkaPort}`],
      logLevel: logLevel.NOTHING,
      ssl: { ca: [readFileSync(pki.ca)], cert: readFileSync(certs[who].cert), key: readFileSync(certs[who].key) },
      connectionTimeout: 5000,
      retry: { retries: 0 },
    });

  test("KafkaJS with a mapped certificate needs no SASL; the user's permissions decide produce and fetch; /connz shows who", async () => {
    const writer = kafka("writer").producer({ allowAutoTopicCreation: true });
    await writer.connect();
    try {
      await writer.send({ topic: "orders", messages: [{ value: "mapped" }] });
      const conns = ((await (await fetch(`http://127.0.0.1:${srv.httpPort}/connz?auth=1`)).json()) as { connections: Array<Record<string, unknown>> }).connections;
      const mine = conns.filter((c) => c.type === "kafka" && c.name === "kmap-writer");
      assert.ok(mine.length > 0);
      for (const c of mine) {
        assert.equal(c.authorized_user, "CN=writer,O=nagare");
        assert.equal(c.tls_version, "1.3");
        assert.equal((c.tls_peer_certs as Array<{ subject: string }>)[0].subject, "CN=writer,O=nagare");
      }
    } finally {
      await writer.disconnect();
    }
    // The reader's user may not publish: Kafka's authorization error, not a closed connection.
    const reader = kafka("reader").producer();
    await reader.connect();
    try {
      await assert.rejects(reader.send({ topic: "orders", messages: [{ value: "no" }] }), (err: Error & { type?: string }) => err.type === "TOPIC_AUTHORIZATION_FAILED");
    } finally {
      await reader.disconnect();
    }
  });

  test("kcat over SSL with mapped certificates writes and reads; an unmapped one, or one whose user has a password, is closed", async () => {
    const ssl = (who: string): string[] => ["-b", `127.0.0.1:${srv.kafkaPort}`, "-X", "security.protocol=SSL", "-X", `ssl.ca.location=${pki.ca}`, "-X", `ssl.certificate.location=${certs[who].cert}`, "-X", `ssl.key.location=${certs[who].key}`];
    const wrote = await kcat([...ssl("writer"), "-P", "-t", "orders.kcat"], "by kcat\n");
    assert.equal(wrote.code, 0, wrote.stderr);
    const read = await kcat([...ssl("reader"), "-C", "-t", "orders.kcat", "-o", "beginning", "-e", "-q"]);
    assert.equal(read.code, 0, read.stderr);
    assert.equal(read.stdout, "by kcat\n");
    for (const who of ["stranger", "locked"]) {
      const refused = await kcat([...ssl(who), "-L", "-m", "5"]);
      assert.notEqual(refused.code, 0, who);
    }
    await assert.rejects(kafka("stranger").admin().connect());
  });

  test("SASL on a connection its certificate already authenticated is out of order (ILLEGAL_SASL_STATE), as on a Kafka SSL listener", async () => {
    const k = new Kafka({
      brokers: [`127.0.0.1:${srv.kafkaPort}`],
      logLevel: logLevel.NOTHING,
      ssl: { ca: [readFileSync(pki.ca)], cert: readFileSync(certs.writer.cert), key: readFileSync(certs.writer.key) },
      sasl: { mechanism: "plain", username: "CN=writer,O=nagare", password: "x" },
      connectionTimeout: 5000,
      retry: { retries: 0 },
    });
    await assert.rejects(k.admin().connect(), (err: Error & { type?: string }) => err.type === "ILLEGAL_SASL_STATE");
  });

  test("a reload: a mapped client takes its user's new permissions, and one whose user is gone is closed (last: it changes the users)", async () => {
    const writer = kafka("writer").producer({ allowAutoTopicCreation: true });
    const reader = kafka("reader").admin();
    await writer.connect();
    await reader.connect();
    try {
      await writer.send({ topic: "orders", messages: [{ value: "before" }] });
      const users = options.authorization!.users!;
      srv.reload({
        ...options,
        authorization: { users: [{ ...users[0], permissions: { publish: { allow: ["elsewhere"] } } }, users[2]] },
      });
      await assert.rejects(writer.send({ topic: "orders", messages: [{ value: "after" }] }), (err: Error & { type?: string }) => err.type === "TOPIC_AUTHORIZATION_FAILED");
      // The reader's certificate maps to nobody now: its connection is closed, and a new one refused.
      await assert.rejects(reader.listTopics());
      await assert.rejects(kafka("reader").admin().connect());
    } finally {
      await writer.disconnect();
      await reader.disconnect();
    }
  });
});
