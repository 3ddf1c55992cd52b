/**
 * The etcd client (src/cluster/etcd-client.ts) against a real etcd 3.4:
 * the gateway calls, leases, the watch stream (fragments, compaction), and
 * what happens when etcd is away: bounded waits, bounded queues, bounded
 * answers, and the reachability it reports.
 */

import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { readFileSync, rmSync } from "node:fs";
import { EtcdClient, EtcdError, EtcdUnavailableError, GRPC, type WatchEvent } from "../src/cluster/etcd-client.js";
import { startEtcd, type EtcdHarness } from "./helpers/etcd.js";
import { startProxy } from "./helpers/tcp-proxy.js";
import { makePki } from "./helpers/pki.js";
import { within } from "./helpers/cluster.js";

let etcd: EtcdHarness;
let client: EtcdClient;

before(async () => {
  etcd = await startEtcd();
  client = new EtcdClient({ endpoints: [etcd.endpoint], requestTimeoutMs: 5000 });
});

after(async () => {
  client.close();
  await etcd.close();
});

test("put, range by key and prefix in pages, delete", async () => {
  const r1 = await client.put("/t/kv/a", "1");
  await client.put("/t/kv/b", "2");
  await client.put("/t/kv/c", "ü3"); // UTF-8 survives the gateway's base64
  await client.put("/t/kvx", "outside the prefix");
  const one = await client.range("/t/kv/a");
  assert.deepEqual(one.kvs.map((k) => [k.key, k.value, k.modRevision, k.version]), [["/t/kv/a", "1", r1, 1]]);
  const all = await client.range("/t/kv/", { prefix: true });
  assert.deepEqual(all.kvs.map((k) => k.value), ["1", "2", "ü3"]);
  assert.equal(all.count, 3);
  const page = await client.range("/t/kv/", { prefix: true, limit: 2 });
  assert.equal(page.more, true);
  const next = await client.range("/t/kv/b\0", { prefix: "/t/kv/", revision: page.revision });
  assert.deepEqual(next.kvs.map((k) => k.key), ["/t/kv/c"]);
  await client.delete("/t/kv/", { prefix: true });
  assert.equal((await client.range("/t/kv/", { prefix: true })).count, 0);
  assert.equal((await client.range("/t/kvx")).count, 1, "the prefix's range end stops before /t/kvx");
});

test("a transaction compares revisions and leases, and reports the failure branch", async () => {
  const rev = await client.put("/t/txn/k", "v1");
  const lost = await client.txn([{ key: "/t/txn/k", modRevision: rev - 1 }], [{ put: "/t/txn/k", value: "never" }], [{ range: "/t/txn/k" }]);
  assert.equal(lost.succeeded, false);
  assert.equal(lost.responses[0].kvs[0].modRevision, rev);
  const won = await client.txn([{ key: "/t/txn/k", modRevision: rev }], [{ put: "/t/txn/k", value: "v2" }]);
  assert.equal(won.succeeded, true);
  assert.ok(won.revision > rev);
  const absent = await client.txn([{ key: "/t/txn/new", modRevision: 0 }], [{ put: "/t/txn/new", value: "x" }]);
  assert.equal(absent.succeeded, true, "revision 0 means the key is absent");
  const again = await client.txn([{ key: "/t/txn/new", modRevision: 0 }], [{ put: "/t/txn/new", value: "y" }]);
  assert.equal(again.succeeded, false);

  const lease = await client.leaseGrant(30);
  await client.put("/t/txn/leased", "x", lease.id);
  assert.equal((await client.txn([{ key: "/t/txn/leased", lease: lease.id }], [])).succeeded, true);
  assert.equal((await client.txn([{ key: "/t/txn/k", lease: lease.id }], [])).succeeded, false, "a key without the lease fails the comparison");
  await client.leaseRevoke(lease.id);
});

test("leases: the granted TTL, keep-alive, revoke deletes the keys, a gone lease says 0", async () => {
  const lease = await client.leaseGrant(1);
  assert.ok(lease.ttl >= 1, `granted ${lease.ttl}`);
  assert.match(lease.id, /^\d+$/);
  await client.put("/t/lease/k", "v", lease.id);
  assert.equal(await client.leaseKeepAlive(lease.id), lease.ttl);
  assert.equal(await client.leaseRevoke(lease.id), true);
  assert.equal((await client.range("/t/lease/k")).count, 0, "revoking deleted the key");
  assert.equal(await client.leaseKeepAlive(lease.id), 0, "a revoked lease is gone");
  assert.equal(await client.leaseRevoke(lease.id), false);
  // An id above 2^53 is kept exact (a double would round it).
  assert.equal(await client.leaseKeepAlive("9007199254740993"), 0);
});

test("a watch sees puts and deletes in order, a transaction's events together, and says so when its start was compacted", async () => {
  const start = (await client.put("/t/w/seed", "0")) + 1;
  const batches: WatchEvent[][] = [];
  let created = 0;
  const w = client.watch(
    { key: "/t/w/", prefix: true, startRevision: start },
    {
      created: (r) => (created = r),
      events: (e) => batches.push(e),
      canceled: () => assert.fail("not canceled"),
      ended: (err) => assert.fail(err),
    },
  );
  await client.put("/t/w/a", "1");
  await client.txn([], [{ put: "/t/w/b", value: "2" }, { put: "/t/w/c", value: "3" }]);
  await client.delete("/t/w/a");
  await within(
    (async () => {
      while (batches.flat().length < 4) await new Promise((r) => setTimeout(r, 5));
    })(),
    10_000,
    "four events",
  );
  w.close();
  assert.ok(created >= start - 1);
  assert.deepEqual(batches.flat().map((e) => `${e.type} ${e.kv.key} ${e.kv.value}`), ["put /t/w/a 1", "put /t/w/b 2", "put /t/w/c 3", "delete /t/w/a "]);
  assert.ok(batches.some((b) => b.length === 2 && b[0].kv.modRevision === b[1].kv.modRevision), "the transaction's two puts came in one response");

  const now = await client.put("/t/w/late", "x");
  await client.compact(now);
  const canceled = await within(
    new Promise<number>((resolve, reject) => {
      client.watch(
        { key: "/t/w/", prefix: true, startRevision: start },
        { created: () => {}, events: () => reject(new Error("events from a compacted revision")), canceled: (rev) => resolve(rev), ended: reject },
      );
    }),
    10_000,
    "the cancellation",
  );
  assert.equal(canceled, now);
  await assert.rejects(client.range("/t/w/", { prefix: true, revision: start }), (e: EtcdError) => e.code === GRPC.OUT_OF_RANGE && /compacted/.test(e.message));
});

test("a large transaction's watch response comes in fragments, delivered whole", async () => {
  const start = (await client.put("/t/frag/seed", "0")) + 1;
  const big = "x".repeat(350_000);
  // Two transactions (one may not exceed etcd's 1.5 MiB request limit), 2.45 MB together: a watch catching up gets both
  // revisions in one response, which etcd cuts into fragments when it passes the request limit plus 512 KiB of gRPC overhead.
  const ops = Array.from({ length: 7 }, (_, i) => ({ put: `/t/frag/${i}`, value: big }));
  for (const c of [ops.slice(0, 4), ops.slice(4)]) await client.txn([], c);
  const fragmentsBefore = client.watchFragments;
  const got: WatchEvent[][] = [];
  await within(
    new Promise<void>((resolve, reject) => {
      const w = client.watch(
        { key: "/t/frag/", prefix: true, startRevision: start },
        {
          created: () => {},
          events: (e) => {
            got.push(e);
            if (got.flat().length === 7) {
              w.close();
              resolve();
            }
          },
          canceled: () => reject(new Error("canceled")),
          ended: reject,
        },
      );
    }),
    10_000,
    "seven events",
  );
  const byRevision = new Map<number, number>();
  for (const b of got) for (const e of b) byRevision.set(e.kv.modRevision, (byRevision.get(e.kv.modRevision) ?? 0) + 1);
  assert.deepEqual([...byRevision.values()], [4, 3]);
  assert.ok(client.watchFragments > fragmentsBefore, "etcd sent fragments");
  for (const b of got) {
    const revs = new Set(b.map((e) => e.kv.modRevision));
    for (const r of revs) assert.equal(b.filter((e) => e.kv.modRevision === r).length, byRevision.get(r), "no revision split across deliveries");
  }
});

test("etcd away: a refused connection fails at once as not applied; a silent one within the timeout as maybe applied; reachability follows", async () => {
  const refused = new EtcdClient({ endpoints: ["http://127.0.0.1:1"], requestTimeoutMs: 2000 });
  const t0 = Date.now();
  await assert.rejects(refused.range("/x"), (e: EtcdUnavailableError) => e instanceof EtcdUnavailableError && !e.maybeApplied && /ECONNREFUSED/.test(e.message));
  assert.ok(Date.now() - t0 < 1000);
  assert.equal(refused.reachable, false);
  refused.close();

  const proxy = await startProxy(etcd.clientPort);
  const c = new EtcdClient({ endpoints: [`http://127.0.0.1:${proxy.port}`], requestTimeoutMs: 400, maxInFlight: 2, maxQueued: 3 });
  try {
    await c.put("/t/away/k", "1");
    const events: string[] = [];
    c.on("down", () => events.push("down"));
    c.on("up", () => events.push("up"));
    proxy.blackhole();
    const t1 = Date.now();
    await assert.rejects(c.put("/t/away/k", "2"), (e: EtcdUnavailableError) => e instanceof EtcdUnavailableError && e.maybeApplied);
    const waited = Date.now() - t1;
    assert.ok(waited >= 350 && waited < 2000, `failed after ${waited} ms`);
    assert.deepEqual(events, ["down"]);
    // Bounded: two in flight, three waiting, the sixth refused at once.
    const calls = Array.from({ length: 6 }, (_, i) => c.range(`/t/away/${i}`).then(() => "ok", (e: Error) => e));
    const results = await within(Promise.all(calls), 5000, "the calls to end");
    const refusedAtOnce = results.filter((r) => r instanceof EtcdError && !(r instanceof EtcdUnavailableError));
    assert.equal(refusedAtOnce.length, 1);
    assert.match((refusedAtOnce[0] as Error).message, /3 requests already wait/);
    assert.equal(results.filter((r) => r instanceof EtcdUnavailableError).length, 5);
    proxy.restore();
    // The put that timed out may yet land: its bytes were on their way when the link went dark (what maybeApplied says).
    assert.match((await c.range("/t/away/k")).kvs[0].value, /^[12]$/);
    assert.deepEqual(events, ["down", "up"]);
  } finally {
    c.close();
    await proxy.close();
  }
});

test("an answer or a watch message over its limit fails instead of growing memory", async () => {
  const c = new EtcdClient({ endpoints: [etcd.endpoint], maxResponseBytes: 10_000, maxWatchBytes: 10_000 });
  try {
    const rev = await c.put("/t/big/k", "y".repeat(20_000));
    await assert.rejects(c.range("/t/big/k"), /exceeds 10000 bytes/);
    const err = await within(
      new Promise<Error>((resolve) => {
        c.watch({ key: "/t/big/k", startRevision: rev }, { created: () => {}, events: () => resolve(new Error("delivered")), canceled: () => resolve(new Error("canceled")), ended: resolve });
      }),
      5000,
      "the watch to end",
    );
    assert.match(err.message, /exceeds 10000 bytes/);
  } finally {
    c.close();
  }
});

test("over TLS with client certificates (etcd --client-cert-auth), through the gateway, watch included", async () => {
  const pki = makePki({ serverAlsoClient: true });
  const secure = await startEtcd({ tls: { ca: pki.ca, cert: pki.serverCert, key: pki.serverKey, clientCertAuth: true } });
  const tls = { ca: readFileSync(pki.ca), cert: readFileSync(pki.clientCert), key: readFileSync(pki.clientKey) };
  const c = new EtcdClient({ endpoints: [secure.endpoint], tls });
  const noCert = new EtcdClient({ endpoints: [secure.endpoint], tls: { ca: tls.ca }, requestTimeoutMs: 2000 });
  try {
    assert.match(secure.endpoint, /^https:/);
    const rev = await c.put("/t/tls/k", "secret");
    assert.equal((await c.range("/t/tls/k")).kvs[0].value, "secret");
    const seen = await within(
      new Promise<string>((resolve, reject) => {
        const w = c.watch(
          { key: "/t/tls/k", startRevision: rev },
          {
            created: () => {},
            events: (e) => {
              w.close();
              resolve(e[0].kv.value);
            },
            canceled: reject,
            ended: reject,
          },
        );
      }),
      5000,
      "the watch over TLS",
    );
    assert.equal(seen, "secret");
    await assert.rejects(noCert.range("/t/tls/k"), EtcdUnavailableError, "without a client certificate the handshake is refused");
  } finally {
    c.close();
    noCert.close();
    await secure.close();
    rmSync(pki.dir, { recursive: true, force: true });
  }
});
