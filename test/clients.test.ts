/**
 * Integration tests with the official NATS clients (v2 `nats` and v3
 * `@nats-io/transport-node`) over real sockets. Every scenario runs once per
 * client generation.
 */

import { after, afterEach, before, describe, test } from "node:test";
import assert from "node:assert/strict";
import { connect as netConnect, type Socket } from "node:net";
import { startServer, type NagareServer } from "../src/index.js";
import { dec, enc, generations, waitUntil, type Conn, type Msg, clientSubscriptions } from "./helpers/clients.js";

for (const gen of generations) {
  describe(`NATS clients ${gen.name}`, () => {
    let srv: NagareServer;
    const open: Conn[] = [];
    const client = async (opts: { noEcho?: boolean; name?: string } = {}): Promise<Conn> => {
      const nc = await gen.connect({ servers: srv.url, ...opts });
      open.push(nc);
      return nc;
    };

    before(async () => {
      srv = await startServer({ port: 0, httpPort: 0 });
    });
    // Each scenario starts with no leftover subscriptions (a `>` from one test would answer another's requests).
    afterEach(async () => {
      await Promise.all(open.splice(0).map((nc) => (nc.isClosed() ? undefined : nc.close())));
    });
    after(async () => {
      await srv.close();
    });

    /** Subscribes and collects messages; `settle()` proves nothing more is in flight. */
    async function collect(nc: Conn, subject: string, opts: { queue?: string; max?: number } = {}) {
      const msgs: Msg[] = [];
      const sub = nc.subscribe(subject, { ...opts, callback: (_e, m) => msgs.push(m) });
      await nc.flush();
      return { msgs, sub };
    }

    test("pub/sub round trip keeps payload bytes intact", async () => {
      const pub = await client();
      const sub = await client();
      const { msgs } = await collect(sub, "rt.data");
      const big = new Uint8Array(64 * 1024).map((_, i) => (i * 7) & 0xff);
      const payloads = [new Uint8Array(0), enc("hello"), big, new Uint8Array([0, 13, 10, 0xff])];
      for (const p of payloads) pub.publish("rt.data", p);
      await pub.flush();
      await waitUntil(() => msgs.length === payloads.length, "all payloads");
      for (let i = 0; i < payloads.length; i++) {
        assert.equal(msgs[i].subject, "rt.data");
        assert.deepEqual(Buffer.from(msgs[i].data), Buffer.from(payloads[i]));
      }
    });

    test("every wildcard form matches what it should and nothing else", async () => {
      const pub = await client();
      const sub = await client();
      const filters = ["*.b.c", "a.*.c", "a.b.*", ">", "a.>", "a.*.c.>", "*"];
      const got = new Map<string, string[]>();
      for (const f of filters) {
        got.set(f, []);
        sub.subscribe(f, { callback: (_e, m) => got.get(f)!.push(m.subject) });
      }
      await sub.flush();
      const subjects = ["a.b.c", "x.b.c", "a.x.c", "a.b.x", "a", "a.b", "a.b.c.d", "a.z.c.d.e", "q"];
      for (const s of subjects) pub.publish(s, enc(s));
      pub.publish("sentinel.end", enc(""));
      await pub.flush();
      await waitUntil(() => got.get(">")!.includes("sentinel.end"), "sentinel through '>'");
      await sub.flush();
      const expect: Record<string, string[]> = {
        "*.b.c": ["a.b.c", "x.b.c"],
        "a.*.c": ["a.b.c", "a.x.c"],
        "a.b.*": ["a.b.c", "a.b.x"],
        ">": [...subjects, "sentinel.end"],
        "a.>": ["a.b.c", "a.x.c", "a.b.x", "a.b", "a.b.c.d", "a.z.c.d.e"],
        "a.*.c.>": ["a.b.c.d", "a.z.c.d.e"],
        "*": ["a", "q"],
      };
      for (const f of filters) assert.deepEqual(got.get(f), expect[f], `filter ${f}`);
    });

    test("queue group: each message to exactly one member, spread evenly", async () => {
      const pub = await client();
      const counts = [0, 0, 0, 0];
      const members = await Promise.all(counts.map(() => client()));
      members.forEach((nc, i) => nc.subscribe("work.items", { queue: "workers", callback: () => counts[i]++ }));
      const watcher = await client();
      const { msgs: all } = await collect(watcher, "work.items");
      await Promise.all(members.map((m) => m.flush()));
      const total = 4000;
      for (let i = 0; i < total; i++) pub.publish("work.items", enc(String(i)));
      await pub.flush();
      await waitUntil(() => counts.reduce((a, b) => a + b, 0) === total && all.length === total, "all deliveries");
      await Promise.all(members.map((m) => m.flush()));
      assert.equal(counts.reduce((a, b) => a + b, 0), total, "no message delivered twice");
      for (const c of counts) assert.ok(c >= 700 && c <= 1300, `uneven spread: ${counts}`);
      assert.equal(all.length, total, "plain subscriber gets everything");
    });

    test("request/reply, and no-responders fails fast", async () => {
      const svc = await client();
      svc.subscribe("svc.echo", { callback: (_e, m) => m.respond(enc(`echo:${dec(m.data)}`)) });
      await svc.flush();
      const req = await client();
      for (let i = 0; i < 20; i++) {
        const r = await req.request("svc.echo", enc(`n${i}`), { timeout: 5000 });
        assert.equal(dec(r.data), `echo:n${i}`);
      }
      const t0 = Date.now();
      await assert.rejects(req.request("svc.nobody", enc("x"), { timeout: 5000 }), (err) => gen.isNoResponders(err));
      assert.ok(Date.now() - t0 < 2500, "no-responders must not wait for the timeout");
      // A subject with an empty token reaches nobody either (a KV key such as "a..b" makes one): told at once too.
      const t1 = Date.now();
      await assert.rejects(req.request("svc..nobody", enc("x"), { timeout: 5000 }), (err) => gen.isNoResponders(err));
      assert.ok(Date.now() - t1 < 2500, "no-responders for a malformed subject must not wait for the timeout");
      assert.equal(dec((await req.request("svc.echo", enc("after"), { timeout: 5000 })).data), "echo:after", "the connection still serves");
    });

    test("headers round trip, multi-valued, and headers with an empty body", async () => {
      const pub = await client();
      const sub = await client();
      const { msgs } = await collect(sub, "hdr.test");
      const h = gen.headers();
      h.set("X-One", "1");
      h.append("X-Multi", "a");
      h.append("X-Multi", "b");
      pub.publish("hdr.test", enc("body"), { headers: h });
      const h2 = gen.headers();
      h2.set("Only", "headers");
      pub.publish("hdr.test", new Uint8Array(0), { headers: h2 });
      await pub.flush();
      await waitUntil(() => msgs.length === 2, "two messages");
      assert.equal(msgs[0].headers?.get("X-One"), "1");
      assert.deepEqual(msgs[0].headers?.values("X-Multi"), ["a", "b"]);
      assert.equal(dec(msgs[0].data), "body");
      assert.equal(msgs[1].headers?.get("Only"), "headers");
      assert.equal(msgs[1].data.length, 0);
    });

    test("auto-unsubscribe after max messages, also removed on the server", async () => {
      const pub = await client();
      const sub = await client();
      const before = clientSubscriptions(srv.broker.globalAccount);
      const { msgs } = await collect(sub, "auto.unsub", { max: 3 });
      assert.equal(clientSubscriptions(srv.broker.globalAccount), before + 1);
      for (let i = 0; i < 10; i++) pub.publish("auto.unsub", enc(String(i)));
      await pub.flush();
      await sub.flush();
      await waitUntil(() => clientSubscriptions(srv.broker.globalAccount) === before, "server-side removal");
      assert.deepEqual(msgs.map((m) => dec(m.data)), ["0", "1", "2"]);
    });

    test("echo off: a publisher does not get its own messages", async () => {
      const self = await client({ noEcho: true });
      const other = await client();
      const mine = await collect(self, "echo.test");
      const theirs = await collect(other, "echo.test");
      self.publish("echo.test", enc("from-self"));
      other.publish("echo.test", enc("from-other"));
      await self.flush();
      await other.flush();
      await waitUntil(() => theirs.msgs.length === 2 && mine.msgs.length === 1, "deliveries");
      await self.flush();
      assert.deepEqual(mine.msgs.map((m) => dec(m.data)), ["from-other"]);
      assert.deepEqual(theirs.msgs.map((m) => dec(m.data)).sort(), ["from-other", "from-self"]);
    });

    test("max payload: the client refuses, and the connection stays usable", async () => {
      const small = await startServer({ port: 0, maxPayload: 1024 });
      const nc = await gen.connect({ servers: small.url });
      try {
        const msgs: Msg[] = [];
        nc.subscribe("mp", { callback: (_e, m) => msgs.push(m) });
        await nc.flush();
        assert.throws(() => nc.publish("mp", new Uint8Array(2048)), (err) => gen.isMaxPayload(err));
        nc.publish("mp", new Uint8Array(1024));
        await nc.flush();
        await waitUntil(() => msgs.length === 1, "the message at the limit");
        assert.equal(msgs[0].data.length, 1024);
      } finally {
        await nc.close();
        await small.close();
      }
    });

    test("drain delivers everything in flight before closing", async () => {
      const pub = await client();
      const sub = await gen.connect({ servers: srv.url });
      let n = 0;
      sub.subscribe("drain.test", { callback: () => n++ });
      await sub.flush();
      for (let i = 0; i < 1000; i++) pub.publish("drain.test", enc(String(i)));
      await pub.flush();
      await sub.drain();
      assert.equal(n, 1000);
      assert.ok(sub.isClosed());
    });

    test("reconnects after a server restart and resumes its subscriptions", async () => {
      let server = await startServer({ port: 0 });
      const port = server.port;
      const nc = await gen.connect({ servers: server.url, reconnectTimeWait: 50, maxReconnectAttempts: -1 });
      try {
        const msgs: Msg[] = [];
        nc.subscribe("restart.test", { callback: (_e, m) => msgs.push(m) });
        await nc.flush();
        const reconnected = (async () => {
          for await (const s of nc.status()) if (s.type === "reconnect") return;
        })();
        await server.close();
        server = await startServer({ port });
        await reconnected;
        await nc.flush();
        const pub = await gen.connect({ servers: server.url });
        pub.publish("restart.test", enc("after"));
        await pub.flush();
        await pub.close();
        await waitUntil(() => msgs.length === 1, "delivery after restart");
        assert.equal(dec(msgs[0].data), "after");
      } finally {
        await nc.close();
        await server.close();
      }
    });

    test("a slow consumer is cut off without hurting anyone else", async () => {
      // maxPayload below maxPending, as nats-server requires (it refuses to start otherwise).
      const server = await startServer({ port: 0, maxPending: 256 * 1024, maxPayload: 64 * 1024 });
      const raw: Socket = netConnect(server.port, "127.0.0.1");
      const rawClosed = new Promise<void>((resolve) => raw.on("close", () => resolve()));
      raw.on("error", () => {});
      const pub = await gen.connect({ servers: server.url });
      const healthy = await gen.connect({ servers: server.url });
      try {
        raw.write('CONNECT {"verbose":false}\r\nSUB slow.test 1\r\nPING\r\n');
        await new Promise<void>((resolve) => raw.once("data", () => resolve()));
        raw.pause(); // never read again
        let got = 0;
        healthy.subscribe("slow.test", { callback: () => got++ });
        await healthy.flush();
        await waitUntil(() => clientSubscriptions(server.broker.globalAccount) === 2, "both subscriptions");
        const payload = new Uint8Array(1024);
        const total = 40 * 1024; // 40 MiB: far past what kernel buffers absorb
        let sent = 0;
        // A paused socket never reads, so it cannot see the server's close: watch the server's count.
        while (sent < total && server.broker.stats.slowConsumers === 0) {
          for (let i = 0; i < 512; i++) pub.publish("slow.test", payload);
          sent += 512;
          await pub.flush();
        }
        assert.equal(server.broker.stats.slowConsumers, 1, "the paused reader is cut off");
        // A few more after the cut: they must still reach the healthy subscriber.
        for (let i = 0; i < 512; i++) pub.publish("slow.test", payload);
        sent += 512;
        await pub.flush();
        raw.resume(); // reading again, it finds the connection gone
        await rawClosed;
        await waitUntil(() => got === sent, `healthy subscriber to get all ${sent} (has ${got})`, 20_000);
        assert.equal(server.broker.connections.size, 2);
      } finally {
        raw.destroy();
        await pub.close();
        await healthy.close();
        await server.close();
      }
    });

    test("1,000 concurrent connections each get their own message", async () => {
      const server = await startServer({ port: 0 });
      const conns: Conn[] = [];
      try {
        const received = new Array<number>(1000).fill(0);
        for (let batch = 0; batch < 10; batch++) {
          const made = await Promise.all(
            Array.from({ length: 100 }, async (_, k) => {
              const i = batch * 100 + k;
              const nc = await gen.connect({ servers: server.url });
              nc.subscribe(`fan.${i}`, { callback: () => received[i]++ });
              await nc.flush();
              return nc;
            }),
          );
          conns.push(...made);
        }
        const pub = await gen.connect({ servers: server.url });
        conns.push(pub);
        assert.equal(server.broker.connections.size, 1001);
        for (let i = 0; i < 1000; i++) pub.publish(`fan.${i}`, enc(String(i)));
        await pub.flush();
        await waitUntil(() => received.every((n) => n === 1), "every connection's message");
      } finally {
        await Promise.all(conns.map((c) => c.close()));
        await server.close();
      }
    });
  });
}
