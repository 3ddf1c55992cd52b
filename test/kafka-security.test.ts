/**
 * The Kafka door's security (issue 18): TLS and mutual TLS on the Kafka
 * listener, SASL PLAIN and SCRAM-SHA-256/512 against the server's
 * `authorization` users, and their NATS permissions deciding what a Kafka
 * client may produce and fetch. Real clients judge: KafkaJS, kcat
 * (librdkafka) and Debian's confluent-kafka. Certificates are made here.
 */

import { describe, test, before, after } from "node:test";
import assert from "node:assert/strict";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { connect as rawConnect } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import bcrypt from "bcryptjs";
import kafkajs from "kafkajs";
import { connect as connectNats } from "@nats-io/transport-node";
import { jetstream } from "@nats-io/jetstream";
import { RawClient } from "./helpers/raw.js";
import { startServer, type NagareServer, type ServerOptions } from "../src/index.js";
import { makePki, type Pki } from "./helpers/pki.js";
import { kcat, python } from "./helpers/kafka.js";
import { runNagare } from "./helpers/cli.js";
import { dec, enc } from "./helpers/clients.js";

const { Kafka, logLevel } = kafkajs;
type SaslOptions = { mechanism: "plain" | "scram-sha-256" | "scram-sha-512"; username: string; password: string };

/** Orders only, and the JetStream API (so that topics may be created and read over NATS too). */
const READ_WRITE = { publish: { allow: ["orders", "orders.>", "$JS.API.>"] }, subscribe: { allow: ["orders", "orders.>", "_INBOX.>"] } };

/** A server with TLS on both listeners and these users; the caller closes it and removes `dir`. */
async function secureServer(pki: Pki, extra: Partial<ServerOptions> = {}): Promise<{ srv: NagareServer; dir: string }> {
  const dir = mkdtempSync(join(tmpdir(), "nagare-ksec-"));
  const hash = bcrypt.hashSync("hashed-pw", 4);
  const srv = await startServer({
    port: 0,
    jetstream: true,
    storeDir: dir,
    authorization: {
      users: [
        { user: "admin", password: "admin-pw" },
        { user: "alice", password: "alice-pw", permissions: READ_WRITE },
        { user: "natsalice", password: "alice-pw", permissions: READ_WRITE },
        { user: "hashed", password: hash },
        { user: "reader", password: "reader-pw", permissions: { publish: { deny: [">"] }, subscribe: { allow: ["orders", "orders.>"] } } },
      ],
    },
    kafka: { port: 0, initialRebalanceDelayMs: 100, tls: { certFile: pki.serverCert, keyFile: pki.serverKey } },
    ...extra,
  });
  return { srv, dir };
}

function kafkaClient(srv: NagareServer, pki: Pki | null, sasl: SaslOptions | null, retries = 2): InstanceType<typeof Kafka> {
  return new Kafka({
    clientId: "ksec-test",
    brokers: [`127.0.0.1:${srv.kafkaPort}`],
    logLevel: logLevel.NOTHING,
    ssl: pki === null ? undefined : { ca: [readFileSync(pki.ca)] },
    sasl: (sasl ?? undefined) as kafkajs.SASLOptions | undefined,
    connectionTimeout: 5000,
    retry: { retries, initialRetryTime: 100 },
  });
}

/** Produces `values` to `topic` and reads them back from the start with a fresh group. */
async function roundTrip(k: InstanceType<typeof Kafka>, topic: string, values: string[]): Promise<string[]> {
  const producer = k.producer({ allowAutoTopicCreation: true });
  await producer.connect();
  try {
    await producer.send({ topic, messages: values.map((value) => ({ value })) });
  } finally {
    await producer.disconnect();
  }
  return consumeAll(k, topic, values.length);
}

async function consumeAll(k: InstanceType<typeof Kafka>, topic: string, count: number): Promise<string[]> {
  const consumer = k.consumer({ groupId: `g-${topic}-${Math.random().toString(36).slice(2)}`, sessionTimeout: 10_000, heartbeatInterval: 500 });
  const got: string[] = [];
  await consumer.connect();
  try {
    await consumer.subscribe({ topic, fromBeginning: true });
    await new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`only ${got.length} of ${count} records within 20 s`)), 20_000);
      void consumer.run({
        eachMessage: async ({ message }) => {
          got.push(message.value?.toString() ?? "");
          if (got.length >= count) {
            clearTimeout(timer);
            resolve();
          }
        },
      });
    });
  } finally {
    await consumer.disconnect();
  }
  return got;
}

/** Whatever a client that does not speak TLS gets from the listener, and whether it is closed. */
function plainBytes(port: number, send: Buffer): Promise<{ received: number; closed: boolean }> {
  return new Promise((resolve) => {
    const s = rawConnect(port, "127.0.0.1");
    let received = 0;
    const timer = setTimeout(() => {
      s.destroy();
      resolve({ received, closed: false });
    }, 5000);
    s.on("connect", () => s.write(send));
    s.on("data", (d) => (received += d.length));
    s.on("error", () => {});
    s.on("close", () => {
      clearTimeout(timer);
      resolve({ received, closed: true });
    });
  });
}

/** An ApiVersions v0 request, then a Metadata v0 for every topic: what a client without SASL would send first. */
function apiVersionsThenMetadata(): Buffer {
  const frame = (apiKey: number, version: number, corr: number, body: Buffer): Buffer => {
    const clientId = Buffer.from("raw");
    const head = Buffer.alloc(4 + 2 + 2 + 4 + 2);
    head.writeInt32BE(2 + 2 + 4 + 2 + clientId.length + body.length, 0);
    head.writeInt16BE(apiKey, 4);
    head.writeInt16BE(version, 6);
    head.writeInt32BE(corr, 8);
    head.writeInt16BE(clientId.length, 12);
    return Buffer.concat([head, clientId, body]);
  };
  const all = Buffer.alloc(4);
  all.writeInt32BE(0); // no topics named: v0 reads an empty list as "all"
  return Buffer.concat([frame(18, 0, 1, Buffer.alloc(0)), frame(3, 0, 2, all)]);
}

describe("TLS on the Kafka listener", () => {
  let pki: Pki;
  before(() => {
    pki = makePki();
  });
  after(() => rmSync(pki.dir, { recursive: true, force: true }));

  test("KafkaJS produces and consumes over TLS; a plaintext client gets nothing and is closed", async () => {
    const dir = mkdtempSync(join(tmpdir(), "nagare-ksec-"));
    const srv = await startServer({ port: 0, storeDir: dir, kafka: { port: 0, initialRebalanceDelayMs: 100, tls: { certFile: pki.serverCert, keyFile: pki.serverKey } } });
    try {
      assert.deepEqual(await roundTrip(kafkaClient(srv, pki, null), "tls-topic", ["a", "b"]), ["a", "b"]);
      const plain = await plainBytes(srv.kafkaPort!, apiVersionsThenMetadata());
      assert.deepEqual(plain, { received: 0, closed: true });
      await assert.rejects(kafkaClient(srv, null, null, 0).admin().connect());
    } finally {
      await srv.close();
      rmSync(dir, { recursive: true, force: true });
    }
  });

  test("verify: a client certificate signed by ca_file is required (mutual TLS), with KafkaJS and kcat", async () => {
    const dir = mkdtempSync(join(tmpdir(), "nagare-ksec-"));
    const srv = await startServer({
      port: 0,
      storeDir: dir,
      kafka: { port: 0, tls: { certFile: pki.serverCert, keyFile: pki.serverKey, caFile: pki.ca, verify: true } },
    });
    try {
      const withCert = new Kafka({
        brokers: [`127.0.0.1:${srv.kafkaPort}`],
        logLevel: logLevel.NOTHING,
        ssl: { ca: [readFileSync(pki.ca)], cert: readFileSync(pki.clientCert), key: readFileSync(pki.clientKey) },
      });
      const admin = withCert.admin();
      await admin.connect();
      await admin.createTopics({ topics: [{ topic: "mtls" }] });
      assert.ok((await admin.listTopics()).includes("mtls"));
      await admin.disconnect();
      await assert.rejects(kafkaClient(srv, pki, null, 0).admin().connect());
      const ssl = ["-X", "security.protocol=SSL", "-X", `ssl.ca.location=${pki.ca}`];
      const produced = await kcat(["-b", `127.0.0.1:${srv.kafkaPort}`, ...ssl, "-X", `ssl.certificate.location=${pki.clientCert}`, "-X", `ssl.key.location=${pki.clientKey}`, "-P", "-t", "mtls"], "m1\n");
      assert.equal(produced.code, 0, produced.stderr);
      const refused = await kcat(["-b", `127.0.0.1:${srv.kafkaPort}`, ...ssl, "-L", "-m", "5"]);
      assert.notEqual(refused.code, 0);
    } finally {
      await srv.close();
      rmSync(dir, { recursive: true, force: true });
    }
  });

  test("TLS the Kafka listener cannot serve stops the start, with file, line and column", async () => {
    await assert.rejects(
      startServer({ port: 0, kafka: { port: 0, tls: { certFile: join(pki.dir, "missing.pem"), keyFile: pki.serverKey } } }),
      /TLS certificate .*missing\.pem: ENOENT/,
    );
    await assert.rejects(startServer({ port: 0, kafka: { port: 0, tls: { certFile: pki.serverCert } as never } }), /option kafka\.tls needs certFile and keyFile/);
    await assert.rejects(startServer({ port: 0, kafka: { port: 0, saslMechanisms: ["GSSAPI"] as never } }), /option kafka\.saslMechanisms must be/);
    const conf = join(pki.dir, "ktls.conf");
    writeFileSync(conf, `port: -1\nkafka {\n  port: -1\n  tls {\n    cert_file: "${pki.serverCert}"\n    key_file: "${join(pki.dir, "nope.key")}"\n    handshake_first: true\n  }\n  sasl_mechanisms: [PLAIN, GSSAPI]\n}\n`);
    const r = await runNagare(["server", "-c", conf], { until: /Server is ready/ });
    assert.equal(r.code, 1);
    assert.equal(
      r.stderr,
      `nagare server: ${conf}:6:5: kafka.tls.key_file: cannot read "${join(pki.dir, "nope.key")}": ENOENT\n` +
        `nagare server: ${conf}:7:5: kafka.tls.handshake_first: the Kafka listener is TLS from the first byte (Kafka clients do not upgrade): handshake_first does not apply (nagare will not start without it)\n` +
        `nagare server: ${conf}:9:3: kafka.sasl_mechanisms: expected mechanisms among PLAIN, SCRAM-SHA-256, SCRAM-SHA-512, got the string "GSSAPI"\n`,
    );
  });
});

describe("SASL on the Kafka listener", () => {
  let pki: Pki;
  let srv: NagareServer;
  let dir: string;
  before(async () => {
    pki = makePki();
    ({ srv, dir } = await secureServer(pki));
  });
  after(async () => {
    await srv.close();
    rmSync(dir, { recursive: true, force: true });
    rmSync(pki.dir, { recursive: true, force: true });
  });

  for (const mechanism of ["plain", "scram-sha-256", "scram-sha-512"] as const) {
    test(`KafkaJS with SASL ${mechanism} over TLS produces and consumes`, async () => {
      const k = kafkaClient(srv, pki, { mechanism, username: "admin", password: "admin-pw" });
      assert.deepEqual(await roundTrip(k, `sasl-${mechanism}`, ["x", "y", "z"]), ["x", "y", "z"]);
    });
  }

  test("a bcrypt user authenticates with PLAIN; SCRAM cannot use a bcrypt hash and is refused", async () => {
    const plain = kafkaClient(srv, pki, { mechanism: "plain", username: "hashed", password: "hashed-pw" }).admin();
    await plain.connect();
    await plain.listTopics();
    await plain.disconnect();
    const scram = kafkaClient(srv, pki, { mechanism: "scram-sha-256", username: "hashed", password: "hashed-pw" }, 0).admin();
    await assert.rejects(scram.connect(), (err: Error) => {
      assert.equal(err.name, "KafkaJSSASLAuthenticationError");
      assert.match(err.message, /invalid credentials with SASL mechanism SCRAM-SHA-256/);
      return true;
    });
  });

  test("a wrong password gets KafkaJS's SASL authentication error, with Kafka's message, for each mechanism", async () => {
    for (const mechanism of ["plain", "scram-sha-256", "scram-sha-512"] as const) {
      const admin = kafkaClient(srv, pki, { mechanism, username: "alice", password: "wrong" }, 0).admin();
      await assert.rejects(admin.connect(), (err: Error) => {
        assert.equal(err.name, "KafkaJSSASLAuthenticationError", `${mechanism}: ${err.message}`);
        assert.match(err.message, mechanism === "plain" ? /Invalid username or password/ : /invalid credentials/);
        return true;
      });
    }
  });

  test("a client without SASL can neither produce nor fetch: the first request past ApiVersions closes it", async () => {
    const noSasl = kafkaClient(srv, pki, null, 0);
    const producer = noSasl.producer();
    await assert.rejects(
      (async () => {
        await producer.connect();
        await producer.send({ topic: "orders", messages: [{ value: "sneaky" }] });
      })(),
    );
    await producer.disconnect().catch(() => {});
    const consumer = noSasl.consumer({ groupId: "sneaky" });
    await assert.rejects(
      (async () => {
        await consumer.connect();
        await consumer.subscribe({ topic: "orders", fromBeginning: true });
      })(),
    );
    await consumer.disconnect().catch(() => {});
    const admin = kafkaClient(srv, pki, { mechanism: "plain", username: "admin", password: "admin-pw" }).admin();
    await admin.connect();
    try {
      const offsets = await admin.fetchTopicOffsets("orders").catch(() => []);
      assert.ok(offsets.every((o) => o.high === "0"), "nothing was stored");
    } finally {
      await admin.disconnect();
    }
  });

  test("permissions: produce needs publish permission on the topic's subject, fetch subscribe permission, each refused TOPIC_AUTHORIZATION_FAILED", async () => {
    const admin = kafkaClient(srv, pki, { mechanism: "plain", username: "admin", password: "admin-pw" }).admin();
    await admin.connect();
    await admin.createTopics({ topics: [{ topic: "orders" }, { topic: "secret" }] });
    await admin.disconnect();

    const alice = kafkaClient(srv, pki, { mechanism: "scram-sha-512", username: "alice", password: "alice-pw" }, 0);
    const producer = alice.producer();
    await producer.connect();
    try {
      await producer.send({ topic: "orders", messages: [{ value: "from kafka alice" }] });
      await assert.rejects(producer.send({ topic: "secret", messages: [{ value: "no" }] }), (err: Error & { type?: string }) => {
        assert.equal(err.type, "TOPIC_AUTHORIZATION_FAILED", err.message);
        return true;
      });
    } finally {
      await producer.disconnect();
    }
    const reader = kafkaClient(srv, pki, { mechanism: "scram-sha-256", username: "reader", password: "reader-pw" }, 0).producer();
    await reader.connect();
    try {
      await assert.rejects(reader.send({ topic: "orders", messages: [{ value: "no" }] }), (err: Error & { type?: string }) => err.type === "TOPIC_AUTHORIZATION_FAILED");
      // Admin operations need what the same JetStream API call needs over NATS.
      const readerAdmin = kafkaClient(srv, pki, { mechanism: "plain", username: "reader", password: "reader-pw" }, 0).admin();
      await readerAdmin.connect();
      await assert.rejects(readerAdmin.deleteTopics({ topics: ["orders"] }));
      await assert.rejects(readerAdmin.createTopics({ topics: [{ topic: "readers-own" }] }));
      assert.ok((await readerAdmin.listTopics()).includes("orders"), "Metadata shows every topic, as Kafka without an authorizer");
      await readerAdmin.disconnect();
    } finally {
      await reader.disconnect();
    }
    // alice may not read "secret": KafkaJS's consumer surfaces the fetch's error.
    const consumer = alice.consumer({ groupId: "alice-secret" });
    await consumer.connect();
    try {
      const failed = new Promise<string>((resolve) => {
        consumer.on(consumer.events.CRASH, (e) => resolve(e.payload.error.message));
      });
      await consumer.subscribe({ topic: "secret", fromBeginning: true });
      void consumer.run({ eachMessage: async () => {} });
      // KafkaJS's words for TOPIC_AUTHORIZATION_FAILED (29).
      assert.match(await failed, /Not authorized to access topics: \[Topic authorization failed\]/);
    } finally {
      await consumer.disconnect();
    }
  });

  test("a Kafka user and a NATS user with the same permissions see the same data", async () => {
    const admin = kafkaClient(srv, pki, { mechanism: "plain", username: "admin", password: "admin-pw" }).admin();
    await admin.connect();
    await admin.createTopics({ topics: [{ topic: "orders.eu" }, { topic: "secret.eu" }] });
    await admin.disconnect();
    const nc = await connectNats({ servers: srv.url, user: "natsalice", pass: "alice-pw" });
    try {
      const producer = kafkaClient(srv, pki, { mechanism: "scram-sha-256", username: "alice", password: "alice-pw" }).producer();
      await producer.connect();
      await producer.send({ topic: "orders.eu", messages: [{ value: "k1" }] });
      await producer.disconnect();
      await jetstream(nc).publish("orders.eu", enc("n1"));
      const seenOverKafka = await consumeAll(kafkaClient(srv, pki, { mechanism: "scram-sha-512", username: "alice", password: "alice-pw" }), "orders.eu", 2);
      const seenOverNats: string[] = [];
      const consumer = await jetstream(nc).consumers.get("orders_eu");
      for await (const m of await consumer.fetch({ max_messages: 2, expires: 5000 })) seenOverNats.push(dec(m.data));
      assert.deepEqual(seenOverKafka, ["k1", "n1"]);
      assert.deepEqual(seenOverNats, ["k1", "n1"]);
    } finally {
      await nc.close();
    }
    // Both are refused the other topic's subject, each in its protocol's words.
    const raw = await RawClient.connected(srv.port, '{"verbose":false,"pedantic":false,"user":"natsalice","pass":"alice-pw"}');
    raw.send("PUB secret.eu 1\r\nx\r\nPING\r\n");
    await raw.waitFor(/^-ERR 'Permissions Violation for Publish to "secret\.eu"'\r\nPONG\r\n$/, "publish violation");
    raw.destroy();
    const kp = kafkaClient(srv, pki, { mechanism: "plain", username: "alice", password: "alice-pw" }, 0).producer();
    await kp.connect();
    try {
      await assert.rejects(kp.send({ topic: "secret.eu", messages: [{ value: "no" }] }), (err: Error & { type?: string }) => err.type === "TOPIC_AUTHORIZATION_FAILED");
    } finally {
      await kp.disconnect();
    }
  });

  test("kcat (librdkafka) with SASL_SSL and each mechanism; a wrong password fails", async () => {
    const base = ["-b", `127.0.0.1:${srv.kafkaPort}`, "-X", "security.protocol=SASL_SSL", "-X", `ssl.ca.location=${pki.ca}`];
    for (const mechanism of ["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"]) {
      const creds = ["-X", `sasl.mechanisms=${mechanism}`, "-X", "sasl.username=admin", "-X", "sasl.password=admin-pw"];
      const topic = `kcat-${mechanism.toLowerCase()}`;
      const p = await kcat([...base, ...creds, "-P", "-t", topic], `${mechanism}-1\n${mechanism}-2\n`);
      assert.equal(p.code, 0, p.stderr);
      const c = await kcat([...base, ...creds, "-C", "-t", topic, "-o", "beginning", "-e", "-q"]);
      assert.equal(c.code, 0, c.stderr);
      assert.equal(c.stdout, `${mechanism}-1\n${mechanism}-2\n`);
    }
    const wrong = await kcat([...base, "-X", "sasl.mechanisms=SCRAM-SHA-256", "-X", "sasl.username=admin", "-X", "sasl.password=nope", "-L", "-m", "5"]);
    assert.notEqual(wrong.code, 0);
    assert.match(wrong.stderr, /Authentication failed|SASL authentication error/i);
  });

  test("confluent-kafka (Python) with SASL_SSL SCRAM-SHA-512 produces and consumes; a wrong password is its authentication error", async () => {
    const conf = (password: string): string =>
      JSON.stringify({
        "bootstrap.servers": `127.0.0.1:${srv.kafkaPort}`,
        "security.protocol": "SASL_SSL",
        "ssl.ca.location": pki.ca,
        "sasl.mechanisms": "SCRAM-SHA-512",
        "sasl.username": "alice",
        "sasl.password": password,
      });
    const ok = await python(`
import json
from confluent_kafka import Producer, Consumer
conf = json.loads(${JSON.stringify(conf("alice-pw"))})
p = Producer(conf)
p.produce("orders.py", b"py-1")
assert p.flush(15) == 0
c = Consumer(dict(conf, **{"group.id": "py", "auto.offset.reset": "earliest"}))
c.subscribe(["orders.py"])
for _ in range(60):
    m = c.poll(0.5)
    if m is not None and m.error() is None:
        print(m.value().decode())
        break
c.close()
`);
    assert.equal(ok.code, 0, ok.stderr);
    assert.equal(ok.stdout.trim(), "py-1");
    const bad = await python(`
import json
from confluent_kafka import Producer
errors = []
conf = json.loads(${JSON.stringify(conf("wrong"))})
conf["error_cb"] = lambda e: errors.append(e.name())
p = Producer(conf)
for _ in range(60):
    p.poll(0.25)
    if errors:
        break
print(errors[0] if errors else "no error reported")
`);
    assert.equal(bad.code, 0, bad.stderr);
    assert.equal(bad.stdout.trim(), "_AUTHENTICATION");
  });
});

/** Every size-prefixed frame a raw socket receives, and whether the server closed it. */
class Frames {
  readonly frames: Buffer[] = [];
  closed = false;
  private buf = Buffer.alloc(0);
  private wake: (() => void) | null = null;
  constructor(readonly socket: import("node:net").Socket) {
    socket.on("data", (d: Buffer) => {
      this.buf = Buffer.concat([this.buf, d]);
      while (this.buf.length >= 4 && this.buf.length >= 4 + this.buf.readInt32BE(0)) {
        this.frames.push(this.buf.subarray(4, 4 + this.buf.readInt32BE(0)));
        this.buf = this.buf.subarray(4 + this.buf.readInt32BE(0));
      }
      this.wake?.();
    });
    socket.on("error", () => {});
    socket.on("close", () => {
      this.closed = true;
      this.wake?.();
    });
  }
  static open(port: number): Promise<Frames> {
    return new Promise((resolve) => {
      const s = rawConnect(port, "127.0.0.1", () => resolve(new Frames(s)));
    });
  }
  /** Waits for `n` frames in all, or the close. */
  async until(n: number): Promise<void> {
    while (this.frames.length < n && !this.closed) await new Promise<void>((r) => (this.wake = r));
  }
}

describe("SASL on a plaintext Kafka listener (SASL_PLAINTEXT)", () => {
  let srv: NagareServer;
  let dir: string;
  before(async () => {
    dir = mkdtempSync(join(tmpdir(), "nagare-ksec-"));
    srv = await startServer({ port: 0, storeDir: dir, authorization: { users: [{ user: "admin", password: "admin-pw" }] }, kafka: { port: 0 } });
  });
  after(async () => {
    await srv.close();
    rmSync(dir, { recursive: true, force: true });
  });

  const sized = (body: Buffer): Buffer => {
    const size = Buffer.alloc(4);
    size.writeInt32BE(body.length);
    return Buffer.concat([size, body]);
  };
  const request = (apiKey: number, version: number, body: Buffer): Buffer => {
    const head = Buffer.alloc(8);
    head.writeInt16BE(apiKey, 0);
    head.writeInt16BE(version, 2);
    head.writeInt32BE(9, 4);
    return sized(Buffer.concat([head, Buffer.from([0, 3]), Buffer.from("raw"), body]));
  };
  const str = (s: string): Buffer => Buffer.concat([Buffer.from([0, Buffer.byteLength(s)]), Buffer.from(s)]);

  test("a v0 handshake is followed by bare tokens (Kafka before SaslAuthenticate); a wrong one closes", async () => {
    const ok = await Frames.open(srv.kafkaPort!);
    ok.socket.write(request(17, 0, str("PLAIN")));
    await ok.until(1);
    assert.equal(ok.frames[0].readInt16BE(4), 0, "handshake accepted");
    ok.socket.write(sized(Buffer.from("\u0000admin\u0000admin-pw")));
    await ok.until(2);
    assert.equal(ok.frames[1].length, 0, "PLAIN's bare reply is empty");
    ok.socket.write(request(3, 0, Buffer.from([0, 0, 0, 0])));
    await ok.until(3);
    assert.equal(ok.closed, false);
    assert.equal(ok.frames[2].readInt32BE(0), 9, "Metadata answered once authenticated");
    ok.socket.destroy();

    const bad = await Frames.open(srv.kafkaPort!);
    bad.socket.write(request(17, 0, str("PLAIN")));
    await bad.until(1);
    bad.socket.write(sized(Buffer.from("\u0000admin\u0000nope")));
    await bad.until(99);
    assert.deepEqual([bad.frames.length, bad.closed], [1, true]);

    const none = await Frames.open(srv.kafkaPort!);
    none.socket.write(request(3, 0, Buffer.from([0, 0, 0, 0])));
    await none.until(99);
    assert.deepEqual([none.frames.length, none.closed], [0, true], "Metadata before SASL: closed, unanswered");
  });

  test("kcat with SASL_PLAINTEXT and SCRAM-SHA-512", async () => {
    const args = ["-b", `127.0.0.1:${srv.kafkaPort}`, "-X", "security.protocol=SASL_PLAINTEXT", "-X", "sasl.mechanisms=SCRAM-SHA-512", "-X", "sasl.username=admin", "-X", "sasl.password=admin-pw"];
    const p = await kcat([...args, "-P", "-t", "plain-scram"], "one\n");
    assert.equal(p.code, 0, p.stderr);
    const c = await kcat([...args, "-C", "-t", "plain-scram", "-o", "beginning", "-e", "-q"]);
    assert.equal(c.stdout, "one\n", c.stderr);
  });
});
