/**
 * Membership (src/cluster/membership.ts) against a real etcd: nodes see
 * each other register and leave; a node that loses etcd (killed, or a
 * partition with no FIN) is fenced within its lease TTL and before any
 * other node could take its name; it registers again when etcd returns;
 * a lease revoked behind its back fences it at once; a paused clock past
 * the deadline loses the lease before any timer fires.
 */

import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { performance } from "node:perf_hooks";
import { EtcdClient, type WatchHandler } from "../src/cluster/etcd-client.js";
import { Membership } from "../src/cluster/membership.js";
import { startEtcd, type EtcdHarness } from "./helpers/etcd.js";
import { startProxy } from "./helpers/tcp-proxy.js";
import { memoryLog, nextEvent, startTestNode, testRecord, uniqueCluster, within } from "./helpers/cluster.js";
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

/** Tests that stop etcd bring it back, whatever happened. */
async function ensureEtcd(): Promise<void> {
  if (!etcd.running) await etcd.start();
}

const names = (n: { node: { membership: Membership } }): string[] => n.node.membership.members().map((m) => m.name);

test("a node registers under a lease, another sees it with its record, and sees it go when it leaves", async () => {
  const cluster = uniqueCluster("reg");
  const b = await startTestNode(etcd.endpoint, cluster, "b");
  const a = await startTestNode(etcd.endpoint, cluster, "a");
  try {
    await waitUntil(() => names(b).join() === "a,b", "b to see a and itself", 5000);
    assert.ok(a.log.lines.some((l) => /\[INF\] cluster reg-\d+-\d+: 2 nodes: a \(this one\), b \(nats:\/\/127\.0\.0\.1:4001\)/.test(l)), a.log.lines.join("\n"));
    const seen = b.node.membership.members().find((m) => m.name === "a")!;
    assert.deepEqual(seen.record, a.record);
    assert.equal(seen.lease, a.node.membership.leaseId);
    assert.equal(seen.self, false);
    assert.equal(b.node.membership.members().find((m) => m.name === "b")!.self, true);
    const key = `/nagare-test/${cluster}/nodes/a`;
    assert.equal((await admin.range(key)).kvs[0].lease, a.node.membership.leaseId, "the key is under the lease");
    assert.ok(a.node.membership.holdsLease());

    await a.node.leave();
    assert.equal((await admin.range(key)).count, 0, "leaving revoked the lease, which deleted the key at once");
    await waitUntil(() => names(b).join() === "b", "b to see a go", 5000);
    assert.ok(b.log.lines.some((l) => /node a joined \(nats:\/\/127\.0\.0\.1:4001\)/.test(l)), b.log.lines.join("\n"));
    assert.ok(b.log.lines.some((l) => /node a left/.test(l)));
  } finally {
    await a.node.leave();
    await b.node.leave();
  }
});

test("a name held by a live node cannot be registered: the start fails saying who holds it; it is taken as soon as the holder leaves", async () => {
  const cluster = uniqueCluster("name");
  const a = await startTestNode(etcd.endpoint, cluster, "n1");
  try {
    await assert.rejects(startTestNode(etcd.endpoint, cluster, "n1", { startLimitMs: 1500 }), /server name "n1" is registered in etcd by node id id-n1 at nats:\/\/127\.0\.0\.1:4002 .*is another server running under this name/);
    const client = new EtcdClient({ endpoints: [etcd.endpoint] });
    const c = new Membership({ client, nodesPrefix: `/nagare-test/${cluster}/nodes/`, name: "n1", leaseTtlS: 2, describe: () => testRecord("n1", cluster), log: memoryLog() });
    const waiting = c.start(10_000);
    try {
      await waitUntil(() => c.holder !== undefined, "the second node to find the name taken", 5000);
      const t0 = performance.now();
      await a.node.leave();
      await within(waiting, 10_000, "the second node to register");
      // Woken by the key's deletion, not by its next retry (one lease TTL, 2 s, away).
      assert.ok(performance.now() - t0 < 1500, `registered ${Math.round(performance.now() - t0)} ms after the holder left`);
      assert.equal(c.state, "registered");
    } finally {
      await c.leave();
      client.close();
    }
  } finally {
    await a.node.leave();
  }
});

test("etcd killed: the node is fenced within its lease TTL; etcd back: it registers again under a new lease and others see it", async () => {
  const cluster = uniqueCluster("kill");
  const a = await startTestNode(etcd.endpoint, cluster, "a");
  const b = await startTestNode(etcd.endpoint, cluster, "b");
  try {
    const m = a.node.membership;
    const oldLease = m.leaseId;
    const fenced = nextEvent<[string]>(m, "fenced", 5000);
    const killedAt = performance.now();
    await etcd.kill();
    const [reason] = await fenced;
    const after = performance.now() - killedAt;
    const ttlMs = m.ttlS * 1000;
    assert.ok(after < ttlMs, `fenced ${Math.round(after)} ms after etcd died, TTL ${ttlMs} ms`);
    assert.equal(m.holdsLease(), false);
    // By the deadline timer, or by a keep-alive timer run late past the deadline on a busy machine.
    assert.match(reason, /^etcd answered no keep-alive of lease \d+ for 1600 ms \(TTL 2 s\): etcd at http:\/\/127\.0\.0\.1:\d+: connect ECONNREFUSED|^the deadline of lease \d+ passed before its keep-alive was sent/);
    assert.ok(a.log.lines.some((l) => /\[WRN\] cluster: node a fenced: .*it leads nothing until it registers again/.test(l)));

    const registered = nextEvent<[string]>(m, "registered", 15_000);
    await etcd.start();
    const [newLease] = await registered;
    assert.notEqual(newLease, oldLease);
    assert.ok(m.holdsLease());
    assert.equal(m.registrations, 2);
    // The old lease came back with etcd (etcd restores leases with a fresh TTL): it was revoked before registering again.
    assert.equal(await admin.leaseKeepAlive(oldLease!), 0);
    await waitUntil(() => b.node.membership.members().find((x) => x.name === "a")?.lease === newLease, "b to see a's new registration", 10_000);
    await waitUntil(() => b.node.membership.holdsLease(), "b to register again too", 10_000);
  } finally {
    await ensureEtcd();
    await a.node.leave();
    await b.node.leave();
  }
});

test("partitioned from etcd (no FIN): fenced before another node can take its name; healed, it waits for the name", async () => {
  const cluster = uniqueCluster("part");
  const proxy = await startProxy(etcd.clientPort);
  const a = await startTestNode(`http://127.0.0.1:${proxy.port}`, cluster, "n1");
  try {
    const events: Array<[string, number]> = [];
    a.node.membership.on("fenced", () => events.push(["a fenced", performance.now()]));
    proxy.blackhole();
    const cutAt = performance.now();
    // The other node keeps trying for the name while a is cut off: it gets it when etcd expires a's lease.
    const b = await startTestNode(etcd.endpoint, cluster, "n1", { startLimitMs: 15_000 });
    events.push(["b registered", performance.now()]);
    try {
      assert.deepEqual(events.map((e) => e[0]), ["a fenced", "b registered"]);
      assert.ok(events[0][1] - cutAt < 2000, `a fenced ${Math.round(events[0][1] - cutAt)} ms after the cut (TTL 2 s)`);
      assert.equal(a.node.membership.holdsLease(), false);

      proxy.restore();
      // a comes back to a name held by a live node: it waits, and takes the name once b leaves.
      await waitUntil(() => a.node.membership.holder !== undefined, "a to find its name taken", 10_000);
      assert.equal(a.node.membership.state, "fenced");
      const registered = nextEvent(a.node.membership, "registered", 10_000);
      await b.node.leave();
      await registered;
      assert.ok(a.node.membership.holdsLease());
    } finally {
      await b.node.leave();
    }
  } finally {
    await a.node.leave();
    await proxy.close();
  }
});

test("a lease revoked behind the node's back fences it at once, and it registers again", async () => {
  const cluster = uniqueCluster("revoke");
  const a = await startTestNode(etcd.endpoint, cluster, "a");
  try {
    const m = a.node.membership;
    const lease = m.leaseId!;
    const fenced = nextEvent<[string]>(m, "fenced", 1500);
    const registered = nextEvent(m, "registered", 5000);
    await admin.leaseRevoke(lease);
    const [reason] = await fenced;
    assert.match(reason, /was deleted in etcd|no longer knows lease/);
    await registered;
    assert.notEqual(m.leaseId, lease);
  } finally {
    await a.node.leave();
  }
});

/** An etcd client whose watches hold their events while `lagging` (a watch stream behind the unary calls). */
class LaggingWatchClient extends EtcdClient {
  lagging = false;
  private readonly held: Array<() => void> = [];
  override watch(o: Parameters<EtcdClient["watch"]>[0], handler: WatchHandler): ReturnType<EtcdClient["watch"]> {
    return super.watch(o, {
      ...handler,
      created: (r) => handler.created(r),
      events: (e) => (this.lagging ? this.held.push(() => handler.events(e)) : handler.events(e)),
      canceled: (r, why) => handler.canceled(r, why),
    });
  }
  catchUp(): void {
    this.lagging = false;
    for (const deliver of this.held.splice(0)) deliver();
  }
}

test("a lease etcd no longer knows (revoked, heard by a keep-alive before the watch) leaves a grace counted from the last keep-alive answered, not the deadline", async () => {
  const cluster = uniqueCluster("revokegrace");
  const client = new LaggingWatchClient({ endpoints: [etcd.endpoint] });
  let now = 1_000_000;
  let wall = Date.now();
  const o = { client, nodesPrefix: `/nagare-test/${cluster}/nodes/`, name: "a", leaseTtlS: 2, describe: () => testRecord("a", cluster), now: () => now, wallNow: () => wall, log: memoryLog() };
  const m = new Membership(o);
  try {
    await m.start(5000);
    const lease = m.leaseId!;
    client.lagging = true;
    const fenced = nextEvent<[string]>(m, "fenced", 3000);
    await admin.leaseRevoke(lease);
    const [reason] = await fenced;
    assert.match(reason, /no longer knows lease/);
    // The key went at the revoke, any time after that send; the others wait 10 TTLs (20 s) from when they saw it go. An
    // etcd stopping answers so too (the lease comes back with it): a grace is left, from that send.
    now += 19_000;
    wall += 19_000;
    assert.equal(m.writesInGrace(), true);
    now += 1000;
    wall += 1000;
    assert.equal(m.writesInGrace(), false, "no writes 20 s past the last keep-alive etcd answered");
  } finally {
    client.catchUp();
    await m.leave();
    client.close();
  }
});

test("a node whose clock passed its deadline (a paused process) does not hold its lease, before any timer fires", async () => {
  const cluster = uniqueCluster("clock");
  let now = 1_000_000;
  const client = new EtcdClient({ endpoints: [etcd.endpoint] });
  const m = new Membership({ client, nodesPrefix: `/nagare-test/${cluster}/nodes/`, name: "a", leaseTtlS: 2, describe: () => testRecord("a", cluster), now: () => now, log: memoryLog() });
  try {
    await m.start(5000);
    assert.ok(m.holdsLease());
    // The deadline is counted from before the grant was sent: TTL less the margin (a fifth, 400 ms).
    assert.equal(m.leaseRemainingMs(), 1600);
    now += 1599;
    assert.ok(m.holdsLease());
    now += 1;
    assert.equal(m.holdsLease(), false, "past the deadline the lease is not counted on, whatever the timers say");
    assert.equal(m.state, "registered", "no timer has fired yet");
    // The next keep-alive finds the deadline passed: fenced without sending it, then registered again.
    const [reason] = await nextEvent<[string]>(m, "fenced", 3000);
    assert.match(reason, /^the deadline of lease \d+ passed before its keep-alive was sent \(the process was held up 0 ms past it\)$/);
    await nextEvent(m, "registered", 5000);
    assert.ok(m.holdsLease());
  } finally {
    await m.leave();
    client.close();
  }
});

test("a machine suspended past the deadline (the monotonic clock stood still, the wall clock moved on) does not hold its lease", async () => {
  const cluster = uniqueCluster("suspend");
  const now = 1_000_000;
  let wall = Date.now();
  const client = new EtcdClient({ endpoints: [etcd.endpoint] });
  // Not a literal: the option is new, and this test ran against the code before it too.
  const o = { client, nodesPrefix: `/nagare-test/${cluster}/nodes/`, name: "a", leaseTtlS: 2, describe: () => testRecord("a", cluster), now: () => now, wallNow: () => wall, log: memoryLog() };
  const m = new Membership(o);
  try {
    await m.start(5000);
    assert.ok(m.holdsLease());
    // Suspended for a minute: etcd expired the lease meanwhile; performance.now() did not count the minute.
    wall += 60_000;
    assert.equal(m.holdsLease(), false, "past the deadline by the wall clock");
  } finally {
    await m.leave();
    client.close();
  }
});

test("a machine suspended through the grace of a lease it lost takes no more writes for its streams of one replica", async () => {
  const cluster = uniqueCluster("suspendgrace");
  let now = 1_000_000;
  let wall = Date.now();
  const client = new EtcdClient({ endpoints: [etcd.endpoint] });
  const o = { client, nodesPrefix: `/nagare-test/${cluster}/nodes/`, name: "a", leaseTtlS: 2, describe: () => testRecord("a", cluster), now: () => now, wallNow: () => wall, log: memoryLog() };
  const m = new Membership(o);
  try {
    await m.start(5000);
    // Held up past its deadline: fenced by its next keep-alive, within the grace (10 TTLs) of an etcd outage.
    const fenced = nextEvent<[string]>(m, "fenced", 3000);
    now += 1600;
    wall += 1600;
    assert.match((await fenced)[0], /passed before its keep-alive was sent/);
    assert.ok(m.writesInGrace());
    // Then suspended for a minute: the others' wait (20 s from the key's going) is over.
    wall += 60_000;
    assert.equal(m.writesInGrace(), false);
  } finally {
    await m.leave();
    client.close();
  }
});

test("the record is written again when it changes, under the same lease", async () => {
  const cluster = uniqueCluster("load");
  const a = await startTestNode(etcd.endpoint, cluster, "a");
  const b = await startTestNode(etcd.endpoint, cluster, "b");
  try {
    const lease = a.node.membership.leaseId;
    a.record.load.connections = 7;
    await a.node.membership.refresh();
    await waitUntil(() => b.node.membership.members().find((x) => x.name === "a")?.record?.load.connections === 7, "b to see a's load", 5000);
    const key = (await admin.range(`/nagare-test/${cluster}/nodes/a`)).kvs[0];
    assert.equal(key.lease, lease);
    assert.equal(key.version, 2);
    await a.node.membership.refresh(); // unchanged: not written
    assert.equal((await admin.range(`/nagare-test/${cluster}/nodes/a`)).kvs[0].version, 2);
  } finally {
    await a.node.leave();
    await b.node.leave();
  }
});
