/**
 * The Kafka door for account users (issue 18): a Kafka user of an
 * `accounts {}` block, over SASL PLAIN or SCRAM, produces to and fetches
 * from its own account's streams, with its permissions; topics and groups
 * of two accounts with the same name are separate, and Metadata lists only
 * the account's topics. In operator mode, a bearer user JWT is the PLAIN
 * password (as nats-server takes an MQTT client's password). KafkaJS and
 * kcat (librdkafka) judge.
 */

import { describe, test, before, after } from "node:test";
import assert from "node:assert/strict";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import kafkajs from "kafkajs";
import { createAccount, createOperator, createUser, type KeyPair } from "@nats-io/nkeys";
import { encodeAccount, encodeOperator, encodeUser, fmtCreds } from "@nats-io/jwt";
import { connect, credsAuthenticator, headers as natsHeaders, jwtAuthenticator } from "@nats-io/transport-node";
import { jetstream, jetstreamManager } from "@nats-io/jetstream";
import { Connection, describeProducersV0 } from "@platformatic/kafka";
import { startServer, type NagareServer } from "../src/index.js";
import { UNLIMITED_JETSTREAM } from "../src/core/accounts.js";
import { kcat, python } from "./helpers/kafka.js";

const { Kafka, logLevel } = kafkajs;
type Sasl = { mechanism: "plain" | "scram-sha-256" | "scram-sha-512"; username: string; password: string };

function client(srv: NagareServer, sasl: Sasl, retries = 2): InstanceType<typeof Kafka> {
  return new Kafka({ clientId: "kacc-test", brokers: [`127.0.0.1:${srv.kafkaPort}`], logLevel: logLevel.NOTHING, sasl: sasl as kafkajs.SASLOptions, retry: { retries, initialRetryTime: 100 } });
}

/** Produces `values` to `topic` and reads the topic back from the start, as `sasl`'s user. */
async function roundTrip(srv: NagareServer, sasl: Sasl, topic: string, values: string[]): Promise<string[]> {
  const kafka = client(srv, sasl);
  const producer = kafka.producer({ allowAutoTopicCreation: true });
  await producer.connect();
  await producer.send({ topic, messages: values.map((value) => ({ value })) });
  await producer.disconnect();
  const consumer = kafka.consumer({ groupId: "same-group", retry: { retries: 2 } });
  await consumer.connect();
  const got: string[] = [];
  try {
    await consumer.subscribe({ topic, fromBeginning: true });
    await new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`${sasl.username} read ${got.length} of ${values.length}`)), 15_000);
      void consumer.run({
        eachMessage: async ({ message }) => {
          got.push(message.value!.toString());
          if (got.length >= values.length) {
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

describe("the Kafka door for account users", () => {
  let dir: string;
  let srv: NagareServer;

  before(async () => {
    dir = mkdtempSync(join(tmpdir(), "nagare-kacc-"));
    srv = await startServer({
      port: 0,
      jetstream: true,
      storeDir: dir,
      authorization: { users: [{ user: "g", password: "g-pw" }] },
      accounts: {
        A: {
          jetstream: true,
          users: [
            { user: "a", password: "a-pw" },
            // May read orders but publish nothing.
            { user: "a-reader", password: "r-pw", permissions: { publish: { deny: [">"] }, subscribe: { allow: ["orders", "orders.>"] } } },
          ],
        },
        B: { jetstream: { maxStreams: 3 }, users: [{ user: "b", password: "b-pw" }] },
        N: { users: [{ user: "n", password: "n-pw" }] },
      },
      kafka: { port: 0, initialRebalanceDelayMs: 100 },
    });
  });
  after(async () => {
    await srv.close();
    rmSync(dir, { recursive: true, force: true });
  });

  test("two accounts' topics of the same name are separate, and so are their groups", async () => {
    const a = await roundTrip(srv, { mechanism: "plain", username: "a", password: "a-pw" }, "orders", ["a1", "a2"]);
    const b = await roundTrip(srv, { mechanism: "scram-sha-256", username: "b", password: "b-pw" }, "orders", ["b1"]);
    assert.deepEqual(a, ["a1", "a2"]);
    assert.deepEqual(b, ["b1"], "B's orders hold B's record only, read by B's own same-group");
    assert.ok(srv.jetstreams!.get("A")!.streams.has("orders"));
    assert.ok(srv.jetstreams!.get("B")!.streams.has("orders"));
    assert.equal(srv.jetstreams!.global!.streams.has("orders"), false, "nothing landed in the default account");
    // Each account's group committed its own offsets.
    const adminA = client(srv, { mechanism: "plain", username: "a", password: "a-pw" }).admin();
    await adminA.connect();
    try {
      const [offsets] = await adminA.fetchOffsets({ groupId: "same-group", topics: ["orders"] });
      assert.equal(offsets.partitions[0].offset, "2");
    } finally {
      await adminA.disconnect();
    }
  });

  test("Metadata and ListTopics show only the account's topics", async () => {
    const adminA = client(srv, { mechanism: "plain", username: "a", password: "a-pw" }).admin();
    const adminB = client(srv, { mechanism: "scram-sha-512", username: "b", password: "b-pw" }).admin();
    await adminA.connect();
    await adminB.connect();
    try {
      await adminA.createTopics({ topics: [{ topic: "only-in-a" }] });
      assert.ok((await adminA.listTopics()).includes("only-in-a"));
      assert.ok(!(await adminB.listTopics()).includes("only-in-a"));
      const meta = await adminB.fetchTopicMetadata();
      assert.ok(meta.topics.every((t) => t.name !== "only-in-a"));
    } finally {
      await adminA.disconnect();
      await adminB.disconnect();
    }
    // kcat (librdkafka) lists what B's user sees.
    const listed = await kcat(["-b", `127.0.0.1:${srv.kafkaPort}`, "-X", "security.protocol=SASL_PLAINTEXT", "-X", "sasl.mechanisms=SCRAM-SHA-256", "-X", "sasl.username=b", "-X", "sasl.password=b-pw", "-L", "-J"]);
    assert.equal(listed.code, 0, listed.stderr);
    const names = (JSON.parse(listed.stdout) as { topics: Array<{ topic: string }> }).topics.map((t) => t.topic);
    assert.ok(names.includes("orders"));
    assert.ok(!names.includes("only-in-a"));
  });

  test("kcat produces and consumes in its user's account; NATS users of that account see the records, others do not", async () => {
    const base = ["-b", `127.0.0.1:${srv.kafkaPort}`, "-X", "security.protocol=SASL_PLAINTEXT", "-X", "sasl.mechanisms=PLAIN", "-X", "sasl.username=a", "-X", "sasl.password=a-pw"];
    const p = await kcat([...base, "-P", "-t", "kcat-topic"], "k1\nk2\n");
    assert.equal(p.code, 0, p.stderr);
    const c = await kcat([...base, "-C", "-t", "kcat-topic", "-o", "beginning", "-e", "-q"]);
    assert.equal(c.stdout, "k1\nk2\n");
    const a = await connect({ servers: srv.url, user: "a", pass: "a-pw" });
    const b = await connect({ servers: srv.url, user: "b", pass: "b-pw" });
    try {
      assert.equal((await (await jetstreamManager(a)).streams.getMessage("kcat-topic", { seq: 2 }))?.string(), "k2");
      await assert.rejects((await jetstreamManager(b)).streams.info("kcat-topic"), /stream not found/);
    } finally {
      await a.close();
      await b.close();
    }
  });

  test("a user's permissions apply in its account; the account's limits too", async () => {
    const reader = client(srv, { mechanism: "plain", username: "a-reader", password: "r-pw" }, 0).producer();
    await reader.connect();
    try {
      await assert.rejects(reader.send({ topic: "orders", messages: [{ value: "nope" }] }), (err: Error & { type?: string }) => err.type === "TOPIC_AUTHORIZATION_FAILED");
    } finally {
      await reader.disconnect();
    }
    // B may have 3 streams: orders and two more.
    const adminB = client(srv, { mechanism: "plain", username: "b", password: "b-pw" }, 0).admin();
    await adminB.connect();
    try {
      await adminB.createTopics({ topics: [{ topic: "b2" }, { topic: "b3" }] });
      await assert.rejects(adminB.createTopics({ topics: [{ topic: "b4" }] }), (err: Error & { errors?: Array<{ type: string }> }) => err.errors?.[0]?.type === "POLICY_VIOLATION");
      // A create that only validates is refused as the create would be (Kafka applies its create policy to it).
      await assert.rejects(adminB.createTopics({ validateOnly: true, waitForLeaders: false, topics: [{ topic: "b4" }] }), (err: Error & { errors?: Array<{ type: string }> }) => err.errors?.[0]?.type === "POLICY_VIOLATION");
    } finally {
      await adminB.disconnect();
    }
  });

  test("DescribeProducers (@platformatic/kafka's raw call): a user sees the producers of a topic it may read; one it may not is TOPIC_AUTHORIZATION_FAILED; another account's topic is unknown", async () => {
    const a = client(srv, { mechanism: "plain", username: "a", password: "a-pw" });
    const admin = a.admin();
    await admin.connect();
    await admin.createTopics({ topics: [{ topic: "orders.dp" }, { topic: "dp-private" }] });
    await admin.disconnect();
    const producer = a.producer({ idempotent: true, maxInFlightRequests: 1 });
    await producer.connect();
    try {
      await producer.send({ topic: "orders.dp", messages: [{ value: "x" }, { value: "y" }] });
      await producer.send({ topic: "dp-private", messages: [{ value: "z" }] });
    } finally {
      await producer.disconnect();
    }
    const ask = async (username: string, password: string) => {
      const conn = new Connection("kacc-test", { sasl: { mechanism: "PLAIN", username, password } });
      await conn.connect("127.0.0.1", srv.kafkaPort!);
      try {
        const answer = await describeProducersV0.api.async(conn, [{ name: "orders.dp", partitionIndexes: [0] }, { name: "dp-private", partitionIndexes: [0] }]).catch((err: { response?: Awaited<ReturnType<typeof describeProducersV0.api.async>> }) => {
          if (err.response === undefined) throw err;
          return err.response;
        });
        return answer.topics.map((t) => [t.name, t.partitions.map((p) => [p.errorCode, p.activeProducers.map((x) => x.lastSequence)])]);
      } finally {
        await conn.close();
      }
    };
    assert.deepEqual(await ask("a", "a-pw"), [["orders.dp", [[0, [1]]]], ["dp-private", [[0, [0]]]]], "the producer's last sequences (1: two records in one batch)");
    assert.deepEqual(await ask("a-reader", "r-pw"), [["orders.dp", [[0, [1]]]], ["dp-private", [[29, []]]]], "may read orders.> only");
    assert.deepEqual(await ask("b", "b-pw"), [["orders.dp", [[3, []]]], ["dp-private", [[3, []]]]], "B's account has neither");
  });

  test("a user of an account without JetStream is refused with a reason; a wrong password as before", async () => {
    const n = client(srv, { mechanism: "plain", username: "n", password: "n-pw" }, 0).admin();
    await assert.rejects(n.connect(), /account N has no JetStream/);
    const wrong = client(srv, { mechanism: "plain", username: "a", password: "nope" }, 0).admin();
    await assert.rejects(wrong.connect(), /Invalid username or password/);
  });

  test("an account's JetStream turned on while running refuses the door's header and marker subjects from its first publish, before the account's door opens", async () => {
    const account = srv.broker.accounts.get("N")!;
    await srv.jetstreams!.setLimits(account, { ...UNLIMITED_JETSTREAM });
    try {
      // Its Kafka door opens later (it reads the account's transaction state first): the names are reserved already.
      const opened = srv.jetstreams!.get("N")!;
      assert.deepEqual([opened.reservedHeaders.has("Kafka-Batch"), opened.reservedSubjects.has("$KAFKA.TXN.COMMIT"), opened.reservedSubjects.has("$KAFKA.TXN.ABORT")], [true, true, true]);
      const nc = await connect({ servers: srv.url, user: "n", pass: "n-pw" });
      try {
        await (await jetstreamManager(nc)).streams.add({ name: "late-markers", subjects: ["late", "$KAFKA.TXN.>"] });
        await assert.rejects(jetstream(nc).publish("$KAFKA.TXN.ABORT", "", { headers: txnHeader() }), /subject \$KAFKA\.TXN\.ABORT is reserved for the Kafka door/);
        assert.equal((await jetstream(nc).publish("late", "fine")).seq, 1);
      } finally {
        await nc.close();
      }
    } finally {
      await srv.jetstreams!.setLimits(account, null);
    }
  });
});

function txnHeader(): ReturnType<typeof natsHeaders> {
  const h = natsHeaders();
  h.set("Kafka-Txn", "1 0");
  return h;
}

describe("the Kafka ACL APIs: answered, and refused with where permissions come from", () => {
  const acl = {
    resourceType: kafkajs.AclResourceTypes.TOPIC,
    resourceName: "orders",
    resourcePatternType: kafkajs.ResourcePatternTypes.LITERAL,
    principal: "User:a",
    host: "*",
    operation: kafkajs.AclOperationTypes.WRITE,
    permissionType: kafkajs.AclPermissionTypes.ALLOW,
  };
  const refusedAs = (type: string) => (err: Error & { type?: string }) => err.type === type;

  test("with authorization: CLUSTER_AUTHORIZATION_FAILED, the message naming the configuration (KafkaJS, kafka-python)", async () => {
    const dir = mkdtempSync(join(tmpdir(), "nagare-kacl-"));
    const srv = await startServer({ port: 0, jetstream: true, storeDir: dir, authorization: { users: [{ user: "admin", password: "admin-pw" }] }, kafka: { port: 0 } });
    try {
      const admin = client(srv, { mechanism: "plain", username: "admin", password: "admin-pw" }, 0).admin();
      await admin.connect();
      try {
        await assert.rejects(admin.describeAcls(acl), refusedAs("CLUSTER_AUTHORIZATION_FAILED"));
        await assert.rejects(admin.createAcls({ acl: [acl] }), refusedAs("CLUSTER_AUTHORIZATION_FAILED"));
        await assert.rejects(admin.deleteAcls({ filters: [acl] }), refusedAs("CLUSTER_AUTHORIZATION_FAILED"));
      } finally {
        await admin.disconnect();
      }
      const py = await python(`
from kafka.admin import KafkaAdminClient, ACLFilter, ACLOperation, ACLPermissionType, ResourcePatternFilter, ResourceType, ACLResourcePatternType
a = KafkaAdminClient(bootstrap_servers="127.0.0.1:${srv.kafkaPort}", security_protocol="SASL_PLAINTEXT", sasl_mechanism="PLAIN", sasl_plain_username="admin", sasl_plain_password="admin-pw")
try:
    a.describe_acls(ACLFilter(principal=None, host="*", operation=ACLOperation.ANY, permission_type=ACLPermissionType.ANY, resource_pattern=ResourcePatternFilter(ResourceType.ANY, None, ACLResourcePatternType.ANY)))
    print("no error")
except Exception as e:
    print(type(e).__name__, e)
a.close()
`);
      assert.equal(py.code, 0, py.stderr);
      assert.match(py.stdout, /ClusterAuthorizationFailedError/);
      assert.match(py.stdout, /nagare keeps no Kafka ACLs/);
    } finally {
      await srv.close();
      rmSync(dir, { recursive: true, force: true });
    }
  });

  test("without authorization: SECURITY_DISABLED, as a Kafka broker without an authorizer", async () => {
    const dir = mkdtempSync(join(tmpdir(), "nagare-kacl-"));
    const srv = await startServer({ port: 0, jetstream: true, storeDir: dir, kafka: { port: 0 } });
    try {
      const admin = new Kafka({ clientId: "kacl", brokers: [`127.0.0.1:${srv.kafkaPort}`], logLevel: logLevel.NOTHING, retry: { retries: 0 } }).admin();
      await admin.connect();
      try {
        await assert.rejects(admin.createAcls({ acl: [acl] }), refusedAs("SECURITY_DISABLED"));
      } finally {
        await admin.disconnect();
      }
    } finally {
      await srv.close();
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

describe("the Kafka door in operator mode: a bearer user JWT as the PLAIN password", () => {
  let dir: string;
  let srv: NagareServer;
  let account: KeyPair;
  const jwts: Record<string, string> = {};
  let strictJwt = "";

  before(async () => {
    dir = mkdtempSync(join(tmpdir(), "nagare-kjwt-"));
    const operator = createOperator();
    account = createAccount();
    const strict = createAccount();
    const accountJwt = await encodeAccount("APP", account, { limits: { mem_storage: -1, disk_storage: -1, streams: -1, consumer: -1 } }, { signer: operator });
    const strictAccountJwt = await encodeAccount("STRICT", strict, { limits: { mem_storage: -1, disk_storage: -1, disallow_bearer: true } }, { signer: operator });
    jwts.bearer = await encodeUser("kafka-app", createUser(), account, { bearer_token: true, pub: { allow: ["events", "$JS.API.>"] }, sub: { allow: ["events", "_INBOX.>"] } });
    jwts.signed = await encodeUser("nats-app", createUser(), account);
    jwts.natsOnly = await encodeUser("nats-only", createUser(), account, { bearer_token: true, allowed_connection_types: ["STANDARD"] });
    const kafkaOnlyKey = createUser();
    jwts.kafkaOnly = await encodeUser("kafka-only", kafkaOnlyKey, account, { allowed_connection_types: ["KAFKA" as "STANDARD"] } /* @nats-io/jwt has no type for it */);
    jwts.kafkaOnlyCreds = new TextDecoder().decode(fmtCreds(jwts.kafkaOnly, kafkaOnlyKey));
    strictJwt = await encodeUser("strict", createUser(), strict, { bearer_token: true });
    srv = await startServer({
      port: 0,
      jetstream: true,
      storeDir: dir,
      operator: { operators: [await encodeOperator("OP", operator)], accounts: { [account.getPublicKey()]: accountJwt, [strict.getPublicKey()]: strictAccountJwt } },
      kafka: { port: 0, initialRebalanceDelayMs: 100 },
    });
  });
  after(async () => {
    await srv.close();
    rmSync(dir, { recursive: true, force: true });
  });

  test("a bearer JWT produces into its account, with the JWT's permissions", async () => {
    const values = await roundTrip(srv, { mechanism: "plain", username: "anything", password: jwts.bearer }, "events", ["e1", "e2"]);
    assert.deepEqual(values, ["e1", "e2"]);
    assert.ok(srv.jetstreams!.get(account.getPublicKey())!.streams.has("events"));
    const producer = client(srv, { mechanism: "plain", username: "anything", password: jwts.bearer }, 0).producer();
    await producer.connect();
    try {
      await assert.rejects(producer.send({ topic: "elsewhere", messages: [{ value: "x" }] }), (err: Error & { type?: string }) => err.type === "TOPIC_AUTHORIZATION_FAILED");
    } finally {
      await producer.disconnect();
    }
  });

  test("refused: a JWT that is no bearer token, one for NATS clients only, an account that disallows bearer tokens, SCRAM", async () => {
    for (const [what, password] of [
      ["signed JWT", jwts.signed],
      ["STANDARD only", jwts.natsOnly],
      ["disallow_bearer", strictJwt],
      ["not a JWT", "hunter2"],
    ]) {
      const admin = client(srv, { mechanism: "plain", username: "u", password }, 0).admin();
      await assert.rejects(admin.connect(), /Invalid username or password/, what);
    }
    const scram = client(srv, { mechanism: "scram-sha-256", username: "kafka-app", password: jwts.bearer }, 0).admin();
    await assert.rejects(scram.connect(), /invalid credentials/);
  });

  test("kcat with the JWT as its PLAIN password; a JWT for Kafka only is refused over NATS", async () => {
    const base = ["-b", `127.0.0.1:${srv.kafkaPort}`, "-X", "security.protocol=SASL_PLAINTEXT", "-X", "sasl.mechanisms=PLAIN", "-X", "sasl.username=jwt", "-X", `sasl.password=${jwts.bearer}`];
    const c = await kcat([...base, "-C", "-t", "events", "-o", "beginning", "-e", "-q"]);
    assert.equal(c.code, 0, c.stderr);
    assert.equal(c.stdout, "e1\ne2\n");
    await assert.rejects(connect({ servers: srv.url, authenticator: credsAuthenticator(new TextEncoder().encode(jwts.kafkaOnlyCreds)), reconnect: false }), /Authorization Violation/);
    // disallow_bearer holds over NATS too; a bearer JWT of an account that allows them connects.
    await assert.rejects(connect({ servers: srv.url, authenticator: jwtAuthenticator(strictJwt), reconnect: false }), /Authorization Violation/);
    await (await connect({ servers: srv.url, authenticator: jwtAuthenticator(jwts.bearer), reconnect: false })).close();
  });
});
