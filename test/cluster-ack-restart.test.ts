/**
 * A confirmed ack (AckSync) survives a follower's restart: the follower
 * that held the leader's consumers when the ack was confirmed restarts
 * while the leader is unreachable (a real process paused with SIGSTOP past
 * its lease), so it gets no copy again, stays in the ISR (the leader that
 * would drop it is the one paused) and takes over alone. It leads with the
 * copy it kept on disk, ack floor and all. Kept in memory only, the copy
 * went with the restart and the follower led with consumers older than the
 * acks the client was told are confirmed (found by the 30-minute fault
 * soak as `ack-floor-lost`). The same once the restarted follower's
 * first settle fails (one injected failure to follow): the copy is read
 * from disk again by the settle that is retried.
 */

import { test, type TestContext } from "node:test";
import assert from "node:assert/strict";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { connect, type NatsConnection } from "@nats-io/transport-node";
import { AckPolicy, jetstream, jetstreamManager, type JsMsg } from "@nats-io/jetstream";
import type { NagareServer } from "../src/server/server.js";
import { StreamReplicas } from "../src/streams/stream-replicas.js";
import { startEtcd } from "./helpers/etcd.js";
import { addStreamLedByK, servedAckFloor, spawnNodeK, startJetStreamNode, uniqueCluster, type JetStreamClusterSite } from "./helpers/cluster.js";
import { waitUntil } from "./helpers/clients.js";

/** Makes the next follow() of `stream`'s first partition in this process fail once, as a transient error (EMFILE) would. */
function failNextFollow(stream: string): { restore: () => void; failed: boolean } {
  const proto = StreamReplicas.prototype as unknown as { follow: (...args: unknown[]) => Promise<unknown> };
  const follow = proto.follow;
  const injected = {
    failed: false,
    restore: () => {
      proto.follow = follow;
    },
  };
  proto.follow = function (this: unknown, ...args: unknown[]) {
    if (args[0] !== stream || args[2] !== 0) return follow.apply(this, args);
    proto.follow = follow;
    injected.failed = true;
    return Promise.reject(new Error("EMFILE: too many open files (injected)"));
  };
  return injected;
}

async function scenario(t: TestContext, failFollow: boolean): Promise<void> {
  const etcd = await startEtcd();
  const site: JetStreamClusterSite = { etcd: etcd.endpoint, dir: mkdtempSync(join(tmpdir(), "nagare-ackrs-")), cluster: uniqueCluster("ackrestart") };
  const conns: NatsConnection[] = [];
  let a: NagareServer | undefined;
  let b: NagareServer | undefined;
  let k: Awaited<ReturnType<typeof spawnNodeK>> | undefined;
  let injected: ReturnType<typeof failNextFollow> | undefined;
  t.after(async () => {
    injected?.restore();
    for (const nc of conns) await nc.close().catch(() => undefined);
    if (k !== undefined) {
      k.child.kill("SIGCONT");
      await k.stop("SIGKILL");
    }
    await Promise.all([a?.close(), b?.close()]);
    await etcd.close();
    rmSync(site.dir, { recursive: true, force: true });
  });
  const client = async (url: string): Promise<NatsConnection> => {
    const nc = await connect({ servers: url, reconnectTimeWait: 100, maxReconnectAttempts: -1 });
    conns.push(nc);
    return nc;
  };
  a = await startJetStreamNode(site, "a");
  b = await startJetStreamNode(site, "b");
  k = await spawnNodeK(site);
  await waitUntil(() => a!.routes!.peers().length === 2 && b!.routes!.peers().length === 2, "a full mesh of three");

  const placed = () => a!.cluster!.placements.get("$G", "KEEP")?.placement;
  const nc = await client(a.url);
  const jsm = await jetstreamManager(nc);
  await addStreamLedByK(jsm, "KEEP", ["keep.>"]);
  await jsm.consumers.add("KEEP", { durable_name: "C", ack_policy: AckPolicy.Explicit, ack_wait: 60_000_000_000 });
  const js = jetstream(nc);
  for (let i = 1; i <= 4; i++) await js.publish("keep.x", `m${i}`);
  const consumer = await js.consumers.get("KEEP", "C");
  const got: JsMsg[] = [];
  for await (const m of await consumer.fetch({ max_messages: 4, expires: 5000 })) got.push(m);
  assert.deepEqual(
    got.map((m) => m.seq),
    [1, 2, 3, 4],
  );
  // Confirmed: every in-sync follower (a and b) held a copy of the consumer with these acks.
  for (const m of got.slice(0, 3)) assert.equal(await m.ackAck({ timeout: 10_000 }), true, `the ack of ${m.seq} confirmed`);
  assert.equal((await jsm.consumers.info("KEEP", "C")).ack_floor.stream_seq, 3);

  // b goes: k drops it from the ISR, leaving a the only follower that can take over.
  await nc.close();
  await b.close();
  b = undefined;
  await waitUntil(() => placed()?.isr?.[0].join() === "k,a", "k to drop b from the ISR", 20_000);

  // k stops answering (still in etcd until its lease runs out); a restarts meanwhile, and cannot copy the consumers again.
  k.child.kill("SIGSTOP");
  await a.close();
  if (failFollow) injected = failNextFollow("KEEP");
  a = await startJetStreamNode(site, "a");
  await waitUntil(() => placed()?.leaders[0] === "a", "a to take over from k", 30_000);
  if (failFollow) assert.equal(injected?.failed, true, "a's first attempt to follow k failed");

  const again = await jetstreamManager(await client(a.url));
  assert.equal(await servedAckFloor(again, "KEEP", "C"), 3, "the ack floor a leads with (-1: no consumer C at all)");
}

test("a follower restarted while its leader is unreachable takes over with the consumers' copy it kept: confirmed acks stay", (t) => scenario(t, false));

test("the same when the restarted follower's first settle fails: the retried settle reads the kept copy", (t) => scenario(t, true));
