/**
 * The metadata store (src/cluster/metadata.ts) and the prefix copy under
 * it (prefix-mirror.ts), against a real etcd: revision-compared changes
 * and the concurrent writer that beats them, the lease fence checked by
 * etcd itself, changes refused while etcd is down and the last known state
 * still read, and a copy that follows etcd through a partition and a
 * restart without missing or repeating an event, or reads everything again
 * after a compaction it could not replay.
 */

import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { EtcdClient } from "../src/cluster/etcd-client.js";
import { ConcurrentChangeError, FencedError, MetadataStore, MetadataUnavailableError, REGISTERED_PREFIX, type MetaChange } from "../src/cluster/metadata.js";
import type { Membership } from "../src/cluster/membership.js";
import { startEtcd, type EtcdHarness } from "./helpers/etcd.js";
import { startProxy } from "./helpers/tcp-proxy.js";
import { nextEvent, startTestNode, uniqueCluster, within } from "./helpers/cluster.js";
import { waitUntil } from "./helpers/clients.js";

let etcd: EtcdHarness;
let admin: EtcdClient;

before(async () => {
  etcd = await startEtcd();
  admin = new EtcdClient({ endpoints: [etcd.endpoint] });
});

after(async () => {
  admin.close();
  await etcd.close();
});

const meta = (cluster: string): string => `/nagare-test/${cluster}/meta/`;

test("a revision-compared change loses to a concurrent writer, says so, and changes nothing", async () => {
  const cluster = uniqueCluster("cas");
  const a = await startTestNode(etcd.endpoint, cluster, "a");
  const b = await startTestNode(etcd.endpoint, cluster, "b");
  try {
    const ma = a.node.metadata;
    const mb = b.node.metadata;
    const r1 = await ma.commit([{ key: "streams/orders", expect: 0, put: '{"leader":"a"}' }]);
    await mb.waitForRevision(r1, 5000); // a's own copy has it when commit resolves
    const seenByA = ma.get("streams/orders")!;
    const seenByB = mb.get("streams/orders")!;
    assert.equal(seenByA.revision, r1);
    assert.equal(seenByB.revision, r1);

    // Both decided from revision r1; b's change lands first.
    const r2 = await mb.commit([{ key: "streams/orders", expect: seenByB.revision, put: '{"leader":"b"}' }]);
    await assert.rejects(
      ma.commit([
        { key: "streams/other", expect: 0, put: "x" },
        { key: "streams/orders", expect: seenByA.revision, put: '{"leader":"c"}' },
      ]),
      (e: ConcurrentChangeError) => {
        assert.ok(e instanceof ConcurrentChangeError);
        assert.equal(e.key, "streams/orders");
        assert.equal(e.expected, r1);
        assert.equal(e.found, r2);
        assert.equal(e.message, `metadata "streams/orders" changed concurrently: expected it at revision ${r1}, found revision ${r2}`);
        return true;
      },
    );
    assert.equal((await admin.range(`${meta(cluster)}streams/other`)).count, 0, "nothing of the losing change was applied");
    assert.equal((await admin.range(`${meta(cluster)}streams/orders`)).kvs[0].value, '{"leader":"b"}');
    await assert.rejects(ma.commit([{ key: "streams/orders", expect: 0, put: "again" }]), /expected it at revision 0 \(absent\), found revision/);

    // Many writers, each retrying from what it reads after losing: no update is lost.
    await ma.commit([{ key: "counter", expect: 0, put: "0" }]);
    const increment = async (m: MetadataStore): Promise<number> => {
      for (let conflicts = 0; ; conflicts++) {
        const cur = m.get("counter");
        if (cur === undefined) {
          await m.waitForRevision(m.revision + 1, 5000);
          continue;
        }
        try {
          await m.commit([{ key: "counter", expect: cur.revision, put: String(Number(cur.value) + 1) }]);
          return conflicts;
        } catch (err) {
          if (!(err instanceof ConcurrentChangeError)) throw err;
          await m.waitForRevision(err.found, 5000); // re-read what won
        }
      }
    };
    const runs = await Promise.all([ma, mb, ma, mb].map(async (m) => {
      let conflicts = 0;
      for (let i = 0; i < 15; i++) conflicts += await increment(m);
      return conflicts;
    }));
    assert.equal((await admin.range(`${meta(cluster)}counter`)).kvs[0].value, "60");
    assert.ok(runs.reduce((x, y) => x + y) > 0, "the writers did collide");
  } finally {
    await a.node.leave();
    await b.node.leave();
  }
});

test("a change that counts on a node being unregistered is refused while its key is in etcd, whatever this node's view of the members says", async () => {
  const cluster = uniqueCluster("absent");
  const a = await startTestNode(etcd.endpoint, cluster, "a");
  const b = await startTestNode(etcd.endpoint, cluster, "b");
  try {
    // A takeover from a: b's view may lag behind a's registering again, etcd's transaction may not.
    const aKey = b.node.membership.keyOf("a");
    assert.equal(aKey, a.node.membership.key);
    const registered = (await admin.range(aKey)).kvs[0].modRevision;
    await assert.rejects(b.node.metadata.commit([{ key: "streams/orders", expect: 0, put: '{"leader":"b"}' }], [aKey]), (e: ConcurrentChangeError) => {
      assert.ok(e instanceof ConcurrentChangeError);
      assert.deepEqual([e.key, e.expected, e.found], [aKey, 0, registered]);
      return true;
    });
    assert.equal((await admin.range(`${meta(cluster)}streams/orders`)).count, 0, "nothing of the refused change was applied");
    await a.node.leave();
    await b.node.metadata.commit([{ key: "streams/orders", expect: 0, put: '{"leader":"b"}' }], [aKey]);
    assert.equal((await admin.range(`${meta(cluster)}streams/orders`)).kvs[0].value, '{"leader":"b"}');
  } finally {
    await a.node.leave();
    await b.node.leave();
  }
});

test("a change beaten by another node's returns once this node's copy holds the winner: a caller deciding again does not send one losing change after another", async () => {
  const cluster = uniqueCluster("beaten");
  const a = await startTestNode(etcd.endpoint, cluster, "a");
  const b = await startTestNode(etcd.endpoint, cluster, "b");
  try {
    // b's copy of the metadata hears of changes 300 ms late (a watch slow to deliver).
    const mirror = b.node.metadata.mirror as unknown as { apply(events: unknown[]): void };
    const apply = mirror.apply.bind(mirror);
    mirror.apply = (events) => void setTimeout(() => apply(events), 300);
    let sent = 0;
    const commit = b.node.metadata.commit.bind(b.node.metadata);
    b.node.metadata.commit = (...args) => (sent++, commit(...args));
    const request = { partitions: 1, spread: false, subjects: ["beaten.>"], origin: "jetstream" as const, config: { name: "beaten" } };
    const won = await a.node.placements.place("$G", "beaten", request);
    assert.equal(won.created, true);
    // b places the same stream, deciding from its copy, which does not have a's placement yet.
    const lost = await b.node.placements.place("$G", "beaten", request);
    assert.equal(lost.created, false, "b finds the placement a made");
    assert.deepEqual(lost.placement.leaders, won.placement.leaders);
    // Before: a losing change every etcd round trip for those 300 ms.
    assert.equal(sent, 1, `${sent} changes sent by b`);
  } finally {
    await a.node.leave();
    await b.node.leave();
  }
});

test("every change is fenced by the node's lease: refused locally without it, and by etcd when the key no longer carries it", async () => {
  const cluster = uniqueCluster("fence");
  const a = await startTestNode(etcd.endpoint, cluster, "a");
  try {
    const real = a.node.membership;
    // A membership that believes it holds a lease etcd does not attach to its key: only etcd's comparison can catch it.
    const stray = await admin.leaseGrant(30);
    let fencedWith = "";
    const believer = { key: real.key, leaseId: stray.id, state: "registered", holdsLease: () => true, fence: (why: string) => (fencedWith = why) } as unknown as Membership;
    const store = new MetadataStore({ client: a.node.client, metaPrefix: meta(cluster), membership: believer });
    await assert.rejects(store.commit([{ key: "k", expect: 0, put: "v" }]), (e: Error) => e instanceof FencedError && /lease \d+ no longer holds its key in etcd/.test(e.message));
    assert.match(fencedWith, /held by lease/);
    assert.equal((await admin.range(`${meta(cluster)}k`)).count, 0);
    await admin.leaseRevoke(stray.id);

    // Fenced locally: refused before anything is sent.
    const fenced = nextEvent(real, "fenced", 1000);
    real.fence("test");
    await fenced;
    await assert.rejects(a.node.metadata.commit([{ key: "k", expect: 0, put: "v" }]), /metadata change refused: this node does not hold its etcd lease \(fenced\)/);
    await nextEvent(real, "registered", 5000);
    await a.node.metadata.commit([{ key: "k", expect: 0, put: "v" }]);
  } finally {
    await a.node.leave();
  }
});

test("etcd down: changes are refused with a clear error, the last known state is still read; etcd back: changes pass again", async () => {
  const cluster = uniqueCluster("down");
  const a = await startTestNode(etcd.endpoint, cluster, "a");
  try {
    const m = a.node.metadata;
    const r = await m.commit([{ key: "placement/p0", expect: 0, put: "a" }]);
    await m.waitForRevision(r, 5000);
    await etcd.kill();
    await assert.rejects(m.commit([{ key: "placement/p0", expect: r, put: "b" }]), (e: Error) => {
      assert.ok(e instanceof MetadataUnavailableError || e instanceof FencedError, String(e));
      // Refused (at once if the client already saw its watch end), or, on a pooled connection etcd closed as it died,
      // sent into a reset: either way it says what happened.
      assert.match(e.message, /^metadata change (refused: .*(ECONNREFUSED|does not hold its etcd lease|etcd does not answer)|sent but not confirmed .*: it may or may not have been applied)/);
      return true;
    });
    // Once the client knows etcd is gone, refusals come at once.
    await waitUntil(() => !a.node.client.reachable, "the client to notice", 5000);
    const t0 = Date.now();
    await assert.rejects(m.commit([{ key: "placement/p0", expect: r, put: "b" }]), /metadata change refused: (etcd does not answer .*the last known metadata \(revision \d+\) is still served|this node does not hold its etcd lease)/);
    assert.ok(Date.now() - t0 < 100);
    assert.equal(m.get("placement/p0")?.value, "a", "the last known state is still read");
    assert.equal(m.live, false);

    await etcd.start();
    await waitUntil(() => a.node.membership.holdsLease() && m.live, "a to register again and the copy to follow etcd", 15_000);
    const r2 = await m.commit([{ key: "placement/p0", expect: r, put: "b" }]);
    assert.ok(r2 > r);
  } finally {
    if (!etcd.running) await etcd.start();
    await a.node.leave();
  }
});

test("the copy follows etcd through a partition and an etcd restart without missing or repeating an event", async () => {
  const cluster = uniqueCluster("resume");
  const proxy = await startProxy(etcd.clientPort);
  const a = await startTestNode(`http://127.0.0.1:${proxy.port}`, cluster, "a");
  const writer = new EtcdClient({ endpoints: [etcd.endpoint], requestTimeoutMs: 1000 });
  try {
    const m = a.node.metadata;
    const startRevision = m.revision;
    const seen: MetaChange[] = [];
    m.onChange((c) => seen.push(c));
    let n = 0;
    /** Writes until `count` more writes landed; a write etcd refused (down) is tried again. */
    const write = async (count: number): Promise<void> => {
      for (let done = 0; done < count; ) {
        const i = n;
        try {
          if (i % 5 === 4) await writer.delete(`${meta(cluster)}k${i - 1}`);
          else await writer.put(`${meta(cluster)}k${i}`, `v${i}`);
          n++;
          done++;
        } catch {
          await waitUntil(() => etcd.running, "etcd to return", 15_000);
        }
      }
    };
    await write(10);
    // Partition: the node misses what is written meanwhile; its lease's keep-alives fail, the watch is dropped.
    proxy.blackhole();
    await write(20);
    await nextEvent(a.node.membership, "fenced", 5000);
    proxy.restore();
    await waitUntil(() => a.node.membership.holdsLease(), "a to register again", 10_000);
    // etcd restart: the stream ends, and is opened again from the revision after the last one seen.
    await write(5);
    await etcd.kill();
    await etcd.start();
    await write(15);
    // A last key marks the end: the copy's revision moves only with keys under its prefix.
    const last = await writer.put(`${meta(cluster)}end`, "");
    assert.ok(await m.waitForRevision(last, 10_000), "the copy caught up");

    // The truth: etcd's history under the prefix, from a fresh watch.
    const truth: string[] = [];
    await within(
      new Promise<void>((resolve, reject) => {
        const w = writer.watch(
          { key: meta(cluster), prefix: true, startRevision: startRevision + 1 },
          {
            created: () => {},
            events: (evs) => {
              for (const e of evs) truth.push(`${e.type} ${e.kv.key.slice(meta(cluster).length)} @${e.kv.modRevision}`);
              if (evs.some((e) => e.kv.modRevision >= last)) {
                w.close();
                resolve();
              }
            },
            canceled: () => reject(new Error("compacted")),
            ended: reject,
          },
        );
      }),
      10_000,
      "the history",
    );
    assert.ok(truth.length >= 51, `${truth.length} events`); // more if a write that timed out had landed and was made again
    assert.deepEqual(seen.map((c) => `${c.type} ${c.key} @${c.revision}`), truth);
    assert.ok(seen.every((c) => !c.resync));
    assert.equal(m.mirror.fullReads, 1, "only the first read: everything else was replayed from revisions");
    assert.deepEqual(m.list().map((e) => `${e.key}=${e.value}`), (await writer.range(meta(cluster), { prefix: true })).kvs.map((k) => `${k.key.slice(meta(cluster).length)}=${k.value}`));
  } finally {
    if (!etcd.running) await etcd.start();
    writer.close();
    await a.node.leave();
    await proxy.close();
  }
});

test("after a compaction it could not replay, the copy reads everything again and reports the differences as resync changes", async () => {
  const cluster = uniqueCluster("compact");
  const proxy = await startProxy(etcd.clientPort);
  const a = await startTestNode(`http://127.0.0.1:${proxy.port}`, cluster, "a");
  try {
    const m = a.node.metadata;
    const r = await m.commit([
      { key: "keep", expect: 0, put: "1" },
      { key: "change", expect: 0, put: "1" },
      { key: "drop", expect: 0, put: "1" },
    ]);
    await m.waitForRevision(r, 5000);
    const seen: MetaChange[] = [];
    m.onChange((c) => seen.push(c));
    proxy.blackhole();
    await admin.put(`${meta(cluster)}change`, "2");
    await admin.put(`${meta(cluster)}change`, "3");
    await admin.delete(`${meta(cluster)}drop`);
    const now = await admin.put(`${meta(cluster)}new`, "1");
    await admin.compact(now);
    await nextEvent(a.node.membership, "fenced", 5000);
    proxy.restore();
    await waitUntil(() => m.mirror.fullReads === 2 && m.live, "the copy to read everything again", 10_000);
    // a registered again meanwhile (fenced while etcd was away): its marker is a change of its own, not the test's.
    const ours = (key: string): boolean => !key.startsWith(REGISTERED_PREFIX);
    assert.deepEqual(
      seen.filter((c) => ours(c.key)).map((c) => `${c.type} ${c.key} ${c.entry?.value ?? ""} ${c.resync}`).sort(),
      ["delete drop  true", "put change 3 true", "put new 1 true"],
    );
    assert.deepEqual(m.list().filter((e) => ours(e.key)).map((e) => `${e.key}=${e.value}`), ["change=3", "keep=1", "new=1"]);
    assert.ok(m.revision >= now);
  } finally {
    await a.node.leave();
    await proxy.close();
  }
});
