/**
 * Routes between three nagare nodes on loopback, judged by the official
 * clients (nats v2, @nats-io/transport-node v3): pub/sub and wildcard
 * interest across nodes, queue groups served once in the cluster,
 * request/reply and no-responders across nodes, interest withdrawn on
 * unsubscribe and disconnect, and a killed node whose clients fail over to
 * the others through `connect_urls`. Every wait is on a condition with a
 * deadline: routes are "up" when /routez says so.
 */

import { after, before, describe, test } from "node:test";
import assert from "node:assert/strict";
import { spawn, type ChildProcess } from "node:child_process";
import { connect as netConnect, createServer, type Socket } from "node:net";
import { EventEmitter } from "node:events";
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { startServer, type NagareServer } from "../src/index.js";
import { Route, type RouteEvents } from "../src/protocols/route/route.js";
import { Subscription } from "../src/subjects/subscription.js";
import type { Message } from "../src/subjects/message.js";
import { startEtcd, type EtcdHarness } from "./helpers/etcd.js";
import { dec, enc, generations, waitUntil, waitUntilAsync, type Conn, type Msg } from "./helpers/clients.js";

interface Routez {
  server_id: string;
  num_routes: number;
  routes: Array<{ remote_id: string; subscriptions: number; subscriptions_list?: string[]; out_msgs: number; in_msgs: number }>;
}

async function routez(s: NagareServer, subs = false): Promise<Routez> {
  const r = await fetch(`http://127.0.0.1:${s.httpPort}/routez${subs ? "?subs=1" : ""}`);
  return (await r.json()) as Routez;
}

/** A node: client port, monitoring and a route listener on free ports; `routes` to dial. */
function node(routes: string[] = []): Promise<NagareServer> {
  return startServer({ host: "127.0.0.1", port: -1, httpPort: -1, cluster: { name: "routes-test", host: "127.0.0.1", port: -1, ...(routes.length > 0 ? { routes } : {}) } });
}

const routeUrl = (s: NagareServer): string => `nats://127.0.0.1:${s.routes!.port}`;

/** Waits until every node routes to every other one, as /routez shows it. */
async function meshed(nodes: NagareServer[]): Promise<void> {
  await waitUntilAsync(async () => {
    for (const n of nodes) {
      const z = await routez(n);
      const others = nodes.filter((o) => o !== n).map((o) => o.broker.serverId);
      if (z.num_routes !== others.length || !others.every((id) => z.routes.some((r) => r.remote_id === id))) return false;
    }
    return true;
  }, "a full mesh");
}

/** Waits until `on` has learned, over its route from `from`, of interest "account subject [queue]". */
async function interestSeen(on: NagareServer, from: NagareServer, entry: string, present = true): Promise<void> {
  await waitUntilAsync(async () => {
    const z = await routez(on, true);
    const r = z.routes.find((x) => x.remote_id === from.broker.serverId);
    return r !== undefined && (r.subscriptions_list ?? []).includes(entry) === present;
  }, `${entry} ${present ? "known" : "withdrawn"} on ${on.broker.serverName}`);
}

describe("a three-node cluster", () => {
  let a: NagareServer;
  let b: NagareServer;
  let c: NagareServer;
  const conns: Conn[] = [];

  before(async () => {
    a = await node();
    // B and C know only A: they find each other through A's gossip.
    b = await node([routeUrl(a)]);
    c = await node([routeUrl(a)]);
    await meshed([a, b, c]);
  });

  after(async () => {
    for (const x of conns) if (!x.isClosed()) await x.close();
    await Promise.all([a?.close(), b?.close(), c?.close()]);
  });

  for (const gen of generations) {
    const open = async (s: NagareServer): Promise<Conn> => {
      const x = await gen.connect({ servers: s.url });
      conns.push(x);
      return x;
    };

    test(`${gen.name}: a message crosses to the nodes with interest, once per subscription, wildcards included`, async () => {
      const [pa, sc, sb] = [await open(a), await open(c), await open(b)];
      const got: string[] = [];
      const one = sc.subscribe(`${gen.name}.orders.*`, { callback: (_e, m) => got.push(`one ${m.subject} ${dec(m.data)}`) });
      const all = sc.subscribe(`${gen.name}.orders.>`, { callback: (_e, m) => got.push(`all ${m.subject} ${dec(m.data)}`) });
      const onB: string[] = [];
      const bsub = sb.subscribe(`${gen.name}.orders.eu.>`, { callback: (_e, m) => onB.push(m.subject) });
      await sc.flush();
      await sb.flush();
      await interestSeen(a, c, `$G ${gen.name}.orders.>`);
      await interestSeen(a, c, `$G ${gen.name}.orders.*`);
      await interestSeen(a, b, `$G ${gen.name}.orders.eu.>`);
      const before = (await routez(a)).routes.find((r) => r.remote_id === b.broker.serverId)!.out_msgs;
      pa.publish(`${gen.name}.orders.new`, enc("1"));
      pa.publish(`${gen.name}.orders.eu.de`, enc("2"));
      pa.publish(`${gen.name}.unrelated`, enc("3"));
      await pa.flush();
      await waitUntil(() => got.length >= 3 && onB.length >= 1, "the deliveries on C and B");
      // A marker after them: once it is in, nothing else of what went before can still arrive.
      const marker = new Promise<void>((resolve) => sc.subscribe(`${gen.name}.marker`, { max: 1, callback: () => resolve() }));
      await sc.flush();
      await interestSeen(a, c, `$G ${gen.name}.marker`);
      pa.publish(`${gen.name}.marker`);
      await marker;
      assert.deepEqual(got.sort(), [`all ${gen.name}.orders.eu.de 2`, `all ${gen.name}.orders.new 1`, `one ${gen.name}.orders.new 1`]);
      assert.deepEqual(onB, [`${gen.name}.orders.eu.de`]);
      // Only what B asked for crossed to B: one message, not the three.
      const after = (await routez(a)).routes.find((r) => r.remote_id === b.broker.serverId)!.out_msgs;
      assert.equal(after - before, 1);
      one.unsubscribe();
      all.unsubscribe();
      bsub.unsubscribe();
    });

    test(`${gen.name}: request/reply across nodes, and no responders only when no node has interest`, async () => {
      const [req, rep] = [await open(a), await open(c)];
      const svc = rep.subscribe(`${gen.name}.svc`, { callback: (_e, m: Msg) => m.respond(enc(`pong ${dec(m.data)}`)) });
      await rep.flush();
      await interestSeen(a, c, `$G ${gen.name}.svc`);
      const r = await req.request(`${gen.name}.svc`, enc("x"), { timeout: 5000 });
      assert.equal(dec(r.data), "pong x");
      await assert.rejects(req.request(`${gen.name}.nobody`, enc("x"), { timeout: 5000 }), (err) => gen.isNoResponders(err));
      // Interest goes with the unsubscribe: the requester is told at once that nobody answers.
      svc.unsubscribe();
      await rep.flush();
      await interestSeen(a, c, `$G ${gen.name}.svc`, false);
      await assert.rejects(req.request(`${gen.name}.svc`, enc("x"), { timeout: 5000 }), (err) => gen.isNoResponders(err));
    });
  }

  test("a queue group over three nodes gets each message once: local members first, else one node", async () => {
    const open = async (s: NagareServer): Promise<Conn> => {
      const x = await generations[0].connect({ servers: s.url });
      conns.push(x);
      return x;
    };
    const pub = await open(a);
    const members = [await open(a), await open(b), await open(c), await open(c)];
    const counts = [0, 0, 0, 0];
    const seen = new Map<string, number>();
    const subs = members.map((m, i) =>
      m.subscribe("work", {
        queue: "workers",
        callback: (_e, msg) => {
          counts[i]++;
          const k = dec(msg.data);
          seen.set(k, (seen.get(k) ?? 0) + 1);
        },
      }),
    );
    // Each member's connection also takes a plain marker: when it has the marker, it has everything before it.
    const markers = members.map(() => 0);
    members.forEach((m, i) => m.subscribe("work.marker", { callback: () => markers[i]++ }));
    for (const m of members) await m.flush();
    await interestSeen(a, b, "$G work workers");
    await interestSeen(a, c, "$G work workers");
    await interestSeen(a, b, "$G work.marker");
    await interestSeen(a, c, "$G work.marker");

    const N = 200;
    const round = async (tag: string, expectedMarkers: number): Promise<void> => {
      for (let i = 0; i < N; i++) pub.publish("work", enc(`${tag}${i}`));
      pub.publish("work.marker");
      await pub.flush();
      await waitUntil(() => markers.every((x) => x === expectedMarkers), "the markers on every member");
    };

    // A publisher on A: A's own member is preferred, every message once.
    await round("a", 1);
    assert.equal(counts[0], N);
    assert.equal(counts[1] + counts[2] + counts[3], 0);

    // Without a member on A: each message goes to one node (B, or C with its two members).
    subs[0].unsubscribe();
    await members[0].flush();
    await waitUntil(() => a.broker.globalAccount.sublist.match("work").queues.length === 0, "A's member gone");
    await round("r", 2);
    assert.equal(counts[1] + counts[2] + counts[3], N);
    assert.ok(counts[1] > 0 && counts[2] + counts[3] > 0, `spread over B and C: ${counts.join(",")}`);
    assert.equal([...seen.values()].filter((v) => v !== 1).length, 0, "every message delivered exactly once");
    assert.equal(seen.size, 2 * N);
    for (const s of subs) s.unsubscribe();
  });

  test("a disconnected client's interest is withdrawn from the other nodes", async () => {
    const open = async (s: NagareServer): Promise<Conn> => {
      const x = await generations[1].connect({ servers: s.url });
      conns.push(x);
      return x;
    };
    const sub = await open(b);
    sub.subscribe("gone.soon", { callback: () => {} });
    await sub.flush();
    await interestSeen(a, b, "$G gone.soon");
    await interestSeen(c, b, "$G gone.soon");
    await sub.close();
    await interestSeen(a, b, "$G gone.soon", false);
    await interestSeen(c, b, "$G gone.soon", false);
    const req = await open(a);
    await assert.rejects(req.request("gone.soon", enc("x"), { timeout: 5000 }), (err) => generations[1].isNoResponders(err));
  });
});

describe("a killed node", () => {
  test("its clients reconnect to another node from connect_urls, and traffic continues", async () => {
    const a = await node();
    const b = await node([routeUrl(a)]);
    const c = await node([routeUrl(a)]);
    const conns: Conn[] = [];
    try {
      await meshed([a, b, c]);
      // Clients are told of every node, and of the cluster's name, in INFO.
      const probe = await generations[0].connect({ servers: b.url });
      const info = (probe as unknown as { info: { connect_urls?: string[]; cluster?: string } }).info;
      assert.deepEqual([...(info.connect_urls ?? [])].sort(), [a, b, c].map((s) => `127.0.0.1:${s.port}`).sort());
      assert.equal(info.cluster, "routes-test");
      await probe.close();
      const listener = await generations[0].connect({ servers: c.url });
      conns.push(listener);
      const got: string[] = [];
      listener.subscribe("after.kill", { callback: (_e, m) => got.push(dec(m.data)) });
      await listener.flush();
      await interestSeen(b, c, "$G after.kill");
      await interestSeen(a, c, "$G after.kill");
      // Each client is given B only: it learns A and C from INFO's connect_urls.
      const clients: Array<[Conn, string]> = [];
      for (const gen of generations) {
        const client = await gen.connect({ servers: b.url, reconnectTimeWait: 50, maxReconnectAttempts: -1 });
        conns.push(client);
        clients.push([client, gen.name]);
        client.publish("after.kill", enc(`${gen.name} before`));
        await client.flush();
      }
      await waitUntil(() => got.length === 2, "the messages before the kill");
      await b.close();
      // Each client reconnects elsewhere (A or C) and is heard again.
      await waitUntilAsync(async () => {
        for (const [client, name] of clients) {
          try {
            client.publish("after.kill", enc(`${name} after`));
            await client.flush();
          } catch {
            return false;
          }
        }
        return clients.every(([, name]) => got.includes(`${name} after`));
      }, "messages from the reconnected clients", 20_000);
      assert.ok(got.includes("v2 after") && got.includes("v3 after"));
      await meshed([a, c]);
    } finally {
      for (const x of conns) if (!x.isClosed()) await x.close();
      await Promise.all([a.close(), b.close(), c.close()]);
    }
  });
});

const NATS_SERVER = "/usr/sbin/nats-server";

/** Debian's nats-server 2.9 on free ports, found through its ports file. */
async function natsServer(dir: string, clusterName: string): Promise<{ proc: ChildProcess; client: string; route: string; monitor: string }> {
  const proc = spawn(NATS_SERVER, ["-a", "127.0.0.1", "-p", "-1", "-m", "-1", "--cluster", "nats://127.0.0.1:-1", "--cluster_name", clusterName, "--ports_file_dir", dir], { stdio: "ignore" });
  let ports: { nats?: string[]; monitoring?: string[]; cluster?: string[] } = {};
  await waitUntil(() => {
    const f = readdirSync(dir).find((x) => x.endsWith(".ports"));
    if (f === undefined) return false;
    try {
      ports = JSON.parse(readFileSync(join(dir, f), "utf8")) as typeof ports;
    } catch {
      return false;
    }
    return ports.cluster !== undefined && ports.nats !== undefined && ports.monitoring !== undefined;
  }, "nats-server's ports file");
  return { proc, client: ports.nats![0], route: ports.cluster![0], monitor: ports.monitoring![0] };
}

describe("a cluster of nagare and nats-server 2.9", { skip: existsSync(NATS_SERVER) ? false : "no /usr/sbin/nats-server" }, () => {
  test("routes form both ways, gossip completes the mesh, messages, requests and queue groups cross", async () => {
    const dir = mkdtempSync(join(tmpdir(), "nagare-routes-"));
    const ns = await natsServer(dir, "mixed");
    const conns: Conn[] = [];
    const mixed = (routes: string[]): Promise<NagareServer> => startServer({ host: "127.0.0.1", port: -1, httpPort: -1, cluster: { name: "mixed", host: "127.0.0.1", port: -1, routes } });
    // A dials nats-server; B knows only A, and the other two routes come from gossip.
    const a = await mixed([ns.route]);
    const b = await mixed([routeUrl(a)]);
    try {
      await waitUntilAsync(async () => {
        const z = (await (await fetch(`${ns.monitor}/routez`)).json()) as { num_routes: number };
        return z.num_routes === 2 && a.routes!.routeCount === 2 && b.routes!.routeCount === 2;
      }, "the mixed mesh");
      const v2 = generations[0];
      const open = async (url: string): Promise<Conn> => {
        const x = await v2.connect({ servers: url });
        conns.push(x);
        return x;
      };
      const [onN, onA, onB] = [await open(ns.client), await open(a.url), await open(b.url)];

      // Subscribe, then subscribe a probe: interest travels in order, so once
      // the probe crosses, what was subscribed before it is known too.
      const probed = async (sub: Conn, from: Conn, tag: string): Promise<void> => {
        let seen = false;
        sub.subscribe(`probe.${tag}`, { callback: () => (seen = true) });
        await sub.flush();
        await waitUntilAsync(async () => {
          from.publish(`probe.${tag}`);
          await from.flush();
          await sub.flush();
          return seen;
        }, `interest from ${tag} known`);
      };

      const got: string[] = [];
      onN.subscribe("mixed.*", { callback: (_e, m) => got.push(`nats-server ${m.subject} ${dec(m.data)}`) });
      onN.subscribe("ask.ns", { callback: (_e, m) => m.respond(enc("from nats-server")) });
      onB.subscribe("mixed.>", { callback: (_e, m) => got.push(`nagare ${m.subject} ${dec(m.data)}`) });
      onB.subscribe("ask.nagare", { callback: (_e, m) => m.respond(enc("from nagare")) });
      await probed(onN, onA, "n");
      await probed(onB, onN, "b");
      await probed(onB, onA, "ba");
      onA.publish("mixed.one", enc("1"));
      onN.publish("mixed.two", enc("2"));
      await waitUntil(() => got.length >= 4, "messages across the mixed cluster");
      await probed(onN, onA, "n2");
      await probed(onB, onN, "b3");
      assert.deepEqual(got.sort(), ["nagare mixed.one 1", "nagare mixed.two 2", "nats-server mixed.one 1", "nats-server mixed.two 2"]);
      assert.equal(dec((await onA.request("ask.ns", enc("?"), { timeout: 5000 })).data), "from nats-server");
      assert.equal(dec((await onN.request("ask.nagare", enc("?"), { timeout: 5000 })).data), "from nagare");
      await assert.rejects(onN.request("ask.nobody", enc("?"), { timeout: 5000 }), (err) => v2.isNoResponders(err));
      const h = v2.headers();
      h.set("Trace", "yes");
      const withHeaders = new Promise<string>((resolve) => onB.subscribe("mixed.hdr", { max: 1, callback: (_e, m) => resolve(`${m.headers?.get("Trace")} ${dec(m.data)}`) }));
      await probed(onB, onN, "b2");
      onN.publish("mixed.hdr", enc("body"), { headers: h });
      assert.equal(await withHeaders, "yes body");

      // A queue group with a member on each of the three nodes.
      const seen = new Map<string, number>();
      const members = [await open(ns.client), await open(a.url), await open(b.url)];
      const counts = [0, 0, 0];
      const qsubs = members.map((m, i) =>
        m.subscribe("mixed.work", {
          queue: "g",
          callback: (_e, msg) => {
            counts[i]++;
            seen.set(dec(msg.data), (seen.get(dec(msg.data)) ?? 0) + 1);
          },
        }),
      );
      for (const [i, m] of members.entries()) await probed(m, onA, `q${i}`);
      for (const [i, m] of members.entries()) await probed(m, onN, `qn${i}`);
      // nats-server's member leaves: its node's messages go to one nagare member each.
      qsubs[0].unsubscribe();
      await members[0].flush();
      await probed(members[0], onN, "left");
      const N = 200;
      for (let i = 0; i < N; i++) onN.publish("mixed.work", enc(`n${i}`));
      await onN.flush();
      await waitUntil(() => seen.size === N, "every queued message");
      // A marker through each route: nothing queued before it can still come.
      await probed(members[1], onN, "m1");
      await probed(members[2], onN, "m2");
      assert.equal([...seen.values()].filter((v) => v !== 1).length, 0, "each message delivered once");
      assert.equal(counts[0], 0);
      assert.equal(counts[1] + counts[2], N);
      assert.ok(counts[1] > 0 && counts[2] > 0, `spread over both nagare nodes: ${counts.join(",")}`);
    } finally {
      for (const x of conns) if (!x.isClosed()) await x.close();
      await Promise.all([a.close(), b.close()]);
      ns.proc.kill();
      await new Promise((resolve) => (ns.proc.exitCode !== null ? resolve(undefined) : ns.proc.once("exit", resolve)));
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

/** A port free now (bound and released), for a node that must be dialled before it listens. */
function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = createServer();
    s.once("error", reject);
    s.listen(0, "127.0.0.1", () => {
      const port = (s.address() as { port: number }).port;
      s.close(() => resolve(port));
    });
  });
}

describe("a mesh forming while a route's first dial fails", () => {
  test("the peer that dialled in is not dialled again: the route carrying traffic is not replaced and nothing published on it is lost", async () => {
    // B is configured with A's route port before A listens, so B's first dial is refused and B retries later;
    // A comes up and dials B first. A second route from B's retry would be kept over A's (both nodes keep the
    // route dialled by the smaller server id) only if B's id is the smaller: a pair the other way round is
    // started again, so the test always has the case in which a duplicate replaces the route in use.
    for (let attempt = 1; ; attempt++) {
      const aPort = await freePort();
      const b = await startServer({ host: "127.0.0.1", port: -1, httpPort: -1, cluster: { name: "forming", host: "127.0.0.1", port: -1, routes: [`nats://127.0.0.1:${aPort}`] } });
      let a: NagareServer | undefined;
      const conns: Conn[] = [];
      try {
        await waitUntil(() => b.routes!.dialling().some((d) => d.attempts >= 1 && !d.connecting), "B's first dial refused");
        a = await startServer({ host: "127.0.0.1", port: -1, httpPort: -1, cluster: { name: "forming", host: "127.0.0.1", port: aPort, routes: [routeUrl(b)] } });
        if (a.broker.serverId < b.broker.serverId) {
          assert.ok(attempt < 30, "server ids never came in the order the test needs");
          continue;
        }
        const aId = a.broker.serverId;
        const bId = b.broker.serverId;
        // Every route each node registers to the other, by its connection id.
        const ridsOnB = new Set<number>();
        const ridsOnA = new Set<number>();
        const record = (on: NagareServer, peer: string, into: Set<number>): void => {
          for (const r of on.routes!.routez(false).routes) if (r.remote_id === peer) into.add(r.rid as number);
        };
        b.routes!.onChange(() => record(b, aId, ridsOnB));
        const aNode = a;
        a.routes!.onChange(() => record(aNode, bId, ridsOnA));
        record(b, aId, ridsOnB);
        record(a, bId, ridsOnA);
        await waitUntil(() => a!.routes!.routeCount === 1 && b.routes!.routeCount === 1, "A's route to B registered on both");
        // The case under test is A's route registered before B's retry: on a machine slow enough to start A after
        // B's retry was already made, that is another case (two routes at once), and the pair is started again.
        if (b.routes!.dialling()[0].attempts > 1) {
          assert.ok(attempt < 30, "A never registered before B's retry");
          continue;
        }

        const [pub, sub] = [await generations[0].connect({ servers: a.url }), await generations[0].connect({ servers: b.url })];
        conns.push(pub, sub);
        const got: number[] = [];
        sub.subscribe("forming.stream", { callback: (_e, m) => got.push(Number(dec(m.data))) });
        await sub.flush();
        await interestSeen(a, b, "$G forming.stream");
        // A steady stream from A to B while B's retry of A's URL is pending, until it is settled: no dial due or
        // under way, and one route open on each side.
        const settled = (): boolean =>
          b.routes!.dialling().every((d) => !d.due && !d.connecting) && a!.routes!.openRouteCount === 1 && b.routes!.openRouteCount === 1;
        let published = 0;
        while (published < 2000 || !settled()) {
          for (let i = 0; i < 50; i++) pub.publish("forming.stream", enc(String(published++)));
          await pub.flush();
          assert.ok(published < 2_000_000, "B's dial of A's URL never settled");
        }
        // A marker after the stream, published until B has one: whatever of the stream could arrive has arrived.
        let marked = false;
        sub.subscribe("forming.marker", { callback: () => (marked = true) });
        await sub.flush();
        await waitUntilAsync(async () => {
          pub.publish("forming.marker");
          await pub.flush();
          await sub.flush();
          return marked;
        }, "the marker on B");
        const missing = published - new Set(got).size;
        assert.equal(missing, 0, `${missing} of ${published} messages published on A after B's interest had crossed were lost`);
        assert.deepEqual(got, Array.from({ length: published }, (_, i) => i));
        assert.equal(ridsOnB.size, 1, "B replaced its route to A");
        assert.equal(ridsOnA.size, 1, "A replaced its route to B");
        // B knows which server its configured URL turned out to be.
        assert.deepEqual(b.routes!.dialling().map((d) => d.serverId), [aId]);
        return;
      } finally {
        for (const x of conns) if (!x.isClosed()) await x.close();
        await Promise.all([a?.close(), b.close()]);
      }
    }
  });
});

describe("routes found in etcd", () => {
  let etcd: EtcdHarness;
  before(async () => {
    etcd = await startEtcd();
  });
  after(async () => {
    await etcd?.close();
  });

  test("nodes with no routes configured dial the route_url of every member, and stop dialling one that left", async () => {
    const cluster = `routes-etcd-${process.pid}`;
    const start = (name: string): Promise<NagareServer> =>
      startServer({ host: "127.0.0.1", port: -1, httpPort: -1, serverName: name, cluster: { name: cluster, host: "127.0.0.1", port: -1 }, etcd: { endpoints: [etcd.endpoint], leaseTtl: 2000 } });
    const nodes: NagareServer[] = [];
    const conns: Conn[] = [];
    try {
      for (const n of ["e1", "e2", "e3"]) nodes.push(await start(n));
      await meshed(nodes);
      const view = nodes[0].cluster!.view();
      assert.deepEqual(
        view.nodes.map((n) => n.route_url),
        nodes.map((n) => `nats-route://127.0.0.1:${n.routes!.port}/`),
      );
      const [pub, sub] = [await generations[1].connect({ servers: nodes[0].url }), await generations[1].connect({ servers: nodes[2].url })];
      conns.push(pub, sub);
      const got = new Promise<string>((resolve) => sub.subscribe("via.etcd", { max: 1, callback: (_e, m) => resolve(dec(m.data)) }));
      await sub.flush();
      await interestSeen(nodes[0], nodes[2], "$G via.etcd");
      pub.publish("via.etcd", enc("found"));
      assert.equal(await got, "found");
      // A node that leaves is not dialled again by the others (it left etcd first).
      await nodes[1].close();
      await meshed([nodes[0], nodes[2]]);
      await waitUntil(() => !nodes[0].cluster!.view().nodes.some((n) => n.name === "e2"), "e2 gone from etcd");
    } finally {
      for (const x of conns) if (!x.isClosed()) await x.close();
      await Promise.all(nodes.map((n) => n.close()));
    }
  });
});

describe("the route listener and bad input", () => {
  test("a peer speaking out of turn, from another cluster or beyond the limits gets -ERR and is closed; the node carries on", async () => {
    const a = await node();
    try {
      /** Sends `lines` to the route port and returns what came back before the close. */
      const exchange = (bytes: string | Buffer): Promise<string> =>
        new Promise((resolve, reject) => {
          const s = netConnect(a.routes!.port, "127.0.0.1");
          let got = "";
          s.on("data", (d) => (got += d.toString()));
          s.on("error", reject);
          s.on("close", () => resolve(got));
          s.on("connect", () => s.write(bytes));
        });
      const id = 'INFO {"server_id":"NPEER","cluster":"routes-test","port":1}\r\n';
      assert.match(await exchange("RMSG $G a 1\r\nx\r\n"), /^INFO \{.*"cluster":"routes-test".*\r\n-ERR 'Protocol Error: message before the route handshake'\r\n$/s);
      assert.match(await exchange('CONNECT {"cluster":"other"}\r\n'), /-ERR 'Cluster name mismatch: other is not routes-test'\r\n$/);
      assert.match(await exchange(`${id}`), /-ERR 'Protocol Error: INFO before CONNECT'/);
      assert.match(await exchange(`CONNECT {"cluster":"routes-test"}\r\n${id}RS+ $G a.b c d e f\r\n`), /-ERR 'Protocol Error: malformed RS\+'/);
      assert.match(await exchange(`CONNECT {}\r\n${id}RMSG $G a 99999999999\r\n`), /-ERR 'Protocol Error: bad message size'|-ERR 'Protocol Error: maximum payload exceeded'/);
      assert.match(await exchange(`CONNECT {}\r\n${id}RMSG $G a 3\r\nabcXY`), /-ERR 'Protocol Error: message payload not followed by CRLF'/);
      assert.match(await exchange(Buffer.alloc(70 * 1024, 0x41)), /-ERR 'Protocol Error: maximum control line exceeded'/);
      // A peer that never finishes its handshake is closed (after max(2 s, auth_timeout)), without an -ERR.
      const t0 = Date.now();
      assert.match(await exchange('CONNECT {"cluster":"routes-test"}\r\n'), /^INFO \{[^\r]*\}\r\n$/);
      assert.ok(Date.now() - t0 >= 1900, "closed at the handshake deadline, not before");
      // The node still routes: a real peer still joins.
      const b = await node([routeUrl(a)]);
      try {
        await meshed([a, b]);
      } finally {
        await b.close();
      }
    } finally {
      await a.close();
    }
  });
});

describe("a route that cannot keep up", () => {
  test("is closed as a slow consumer once its pending bytes pass max_pending, and counted", async () => {
    const a = await startServer({ host: "127.0.0.1", port: -1, httpPort: -1, maxPending: 256 * 1024, maxPayload: 128 * 1024, cluster: { name: "routes-test", host: "127.0.0.1", port: -1 } });
    const conns: Conn[] = [];
    try {
      // A fake peer that registers, asks for everything on "flood", and never reads again.
      const peer = netConnect(a.routes!.port, "127.0.0.1");
      await new Promise<void>((resolve) => peer.once("connect", () => resolve()));
      peer.write('CONNECT {"cluster":"routes-test"}\r\nINFO {"server_id":"NSLOW","cluster":"routes-test","port":1}\r\nRS+ $G flood\r\n');
      await waitUntil(() => a.routes!.routeCount === 1, "the fake peer registered");
      await waitUntilAsync(async () => (await routez(a, true)).routes.some((r) => (r.subscriptions_list ?? []).includes("$G flood")), "its interest");
      peer.pause();
      const pub = await generations[0].connect({ servers: a.url });
      conns.push(pub);
      const chunk = new Uint8Array(64 * 1024);
      await waitUntilAsync(async () => {
        for (let i = 0; i < 64; i++) pub.publish("flood", chunk);
        await pub.flush();
        return a.routes!.routeCount === 0;
      }, "the slow route closed", 20_000);
      assert.ok(a.broker.stats.slowConsumers >= 1);
      assert.equal((await routez(a)).num_routes, 0);
      peer.destroy();
    } finally {
      for (const x of conns) if (!x.isClosed()) await x.close();
      await a.close();
    }
  });
});

describe("route frames split across reads", () => {
  /** A route over a socket stand-in, whose reads the test cuts where it likes. */
  function fakeRoute(server: NagareServer): { route: Route; read(chunk: Buffer): void; written(): string } {
    const socket = new EventEmitter() as EventEmitter & Record<string, unknown>;
    const out: Buffer[] = [];
    Object.assign(socket, {
      remoteAddress: "127.0.0.1",
      remotePort: 1,
      writableLength: 0,
      destroyed: false,
      setNoDelay: () => socket,
      write: (b: Buffer, cb?: () => void) => {
        out.push(Buffer.from(b));
        if (cb) queueMicrotask(cb);
        return true;
      },
      end: () => undefined,
      destroy: () => undefined,
    });
    const events: RouteEvents = {
      identified: (r) => (r.registered = true),
      infoUpdate: () => undefined,
      connectOk: () => null,
      closed: () => undefined,
      interestAdded: () => undefined,
    };
    const route = new Route(server.broker, socket as unknown as Socket, false, null, events);
    return {
      route,
      read: (chunk) => {
        socket.emit("data", chunk);
        server.broker.flushDirty();
      },
      written: () => Buffer.concat(out).toString("latin1"),
    };
  }

  test("every message is delivered once and whole, wherever the reads are cut; PINGs are answered", async () => {
    const server = await startServer({ host: "127.0.0.1", port: -1 });
    try {
      const got: string[] = [];
      const receiver = {
        echo: true,
        deliver: (_s: Subscription, m: Message) => {
          got.push(`${m.subject}|${m.reply}|${m.hdrLen}|${m.data.toString("latin1", m.start, m.end)}`);
        },
      };
      server.broker.accounts.get("$G")!.subscribe(new Subscription(receiver, "split.>", null));
      const big = "B".repeat(3000);
      const frames = [
        "RMSG $G split.a 5\r\nhello\r\n",
        "PING\r\n",
        "RMSG $G split.b reply.to 0\r\n\r\n",
        "HMSG $G split.c 12 15\r\nNATS/1.0\r\n\r\nabc\r\n",
        "RMSG $G split.d | q1 q2 2\r\nhi\r\n",
        "RMSG $G split.e + reply.q q1 3\r\nyes\r\n",
        "RS+ $G other.subject\r\n",
        `RMSG $G split.big ${big.length}\r\n${big}\r\n`,
        "RMSG $G split.f 1\r\nz\r\n",
        // Subjects are UTF-8 on routes as from clients (RS+ interest in it must match).
        "RMSG $G split.\u00fc 1\r\nu\r\n",
      ].join("");
      const expected = ["split.a||0|hello", "split.b|reply.to|0|", "split.c||12|NATS/1.0\r\n\r\nabc", "split.d||0|hi", "split.e|reply.q|0|yes", `split.big||0|${big}`, "split.f||0|z", "split.\u00fc||0|u"];
      const stream = Buffer.from(frames, "utf8");
      const hello = 'CONNECT {"cluster":"x"}\r\nINFO {"server_id":"NSPLIT","port":1}\r\n';
      let rounds = 0;
      const check = (cuts: number[], r: ReturnType<typeof fakeRoute>): void => {
        got.length = 0;
        let at = 0;
        for (const c of [...cuts, stream.length]) {
          r.read(stream.subarray(at, c));
          at = c;
        }
        assert.deepEqual(got, expected, `cut at ${cuts.join(",")}`);
        rounds++;
      };
      const r = fakeRoute(server);
      r.read(Buffer.from(hello));
      assert.ok(r.route.registered);
      // Two reads, cut at every byte; then every byte a read of its own.
      for (let cut = 1; cut < stream.length; cut++) check([cut], r);
      check(
        Array.from({ length: stream.length - 1 }, (_, i) => i + 1),
        r,
      );
      // Three reads at seeded random cuts.
      let seed = 19;
      const rand = (n: number): number => ((seed = (seed * 1103515245 + 12345) & 0x7fffffff) % n) + 1;
      for (let i = 0; i < 300; i++) {
        const a = rand(stream.length - 2);
        check([a, a + rand(stream.length - a - 1)], r);
      }
      assert.equal(r.route.closed, false);
      await waitUntil(() => (r.written().match(/PONG\r\n/g) ?? []).length === rounds, "a PONG for every PING");
      assert.ok(r.route.subscriptionsList().includes("$G other.subject"));
      // A message split across reads is still bounded by max_payload: refused before it is all here.
      const bad = fakeRoute(server);
      bad.read(Buffer.from(hello));
      bad.read(Buffer.from(`RMSG $G split.x ${server.broker.options.maxPayload + 65537}`));
      bad.read(Buffer.from("\r\nabc"));
      assert.equal(bad.route.closed, true);
      assert.match(bad.written(), /-ERR 'Protocol Error: maximum payload exceeded'/);
      r.route.close("test done");
    } finally {
      await server.close();
    }
  });
});
