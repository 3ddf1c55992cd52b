/**
 * De-duplication ids survive a failover for messages removed since they
 * were stored: a job acked off a work queue, a message deleted, a subject
 * purged. A publisher that lost its PubAck to the leader's death retries
 * with the same Nats-Msg-Id, as NATS advises, and must get a duplicate, not
 * a second copy of the job. nats-server's replicas remember each id as
 * they apply its message; nagare's new leader rebuilt its window from the
 * messages still in its log, and stored every such retry again (found by
 * an outside attack, nats-server 2.9 compared side by side).
 */

import { test } from "node:test";
import assert from "node:assert/strict";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { connect, type NatsConnection } from "@nats-io/transport-node";
import { AckPolicy, jetstream, jetstreamManager, RetentionPolicy, type JetStreamClient, type PubAck } from "@nats-io/jetstream";
import type { NagareServer } from "../src/server/server.js";
import { startEtcd } from "./helpers/etcd.js";
import { addStreamLedByK, spawnNodeK, startJetStreamNode, uniqueCluster, type JetStreamClusterSite } from "./helpers/cluster.js";
import { waitUntil, waitUntilAsync } from "./helpers/clients.js";

/** Whether a JetStream publish failed with "no responders" (the client says "jetstream is not enabled", its cause the 503). */
function noResponders(err: Error): boolean {
  return (err.cause as { isNoResponders?: () => boolean } | undefined)?.isNoResponders?.() === true;
}

/**
 * Publishes with `id` as its de-duplication id until a PubAck comes, as a
 * publisher does across a failover: until the new leader has taken the
 * stream up, a publish is dropped (its request times out) or, sent to a node
 * no longer reaching the old leader, answered "no responders".
 */
async function publishRetried(js: JetStreamClient, subject: string, id: string): Promise<PubAck> {
  for (let attempt = 1; ; attempt++) {
    try {
      return await js.publish(subject, id, { msgID: id, timeout: 2000 });
    } catch (err) {
      if (attempt >= 15 || !(err instanceof Error) || (err.name !== "TimeoutError" && !noResponders(err))) throw err;
    }
  }
}

test("a new leader answers retries of removed messages' ids as duplicates, within the window", async (t) => {
  const etcd = await startEtcd();
  const site: JetStreamClusterSite = { etcd: etcd.endpoint, dir: mkdtempSync(join(tmpdir(), "nagare-dedupfo-")), cluster: uniqueCluster("dedupfo") };
  const conns: NatsConnection[] = [];
  let a: NagareServer | undefined;
  let b: NagareServer | undefined;
  let k: Awaited<ReturnType<typeof spawnNodeK>> | undefined;
  t.after(async () => {
    for (const nc of conns) await nc.close().catch(() => undefined);
    await k?.stop("SIGKILL");
    await Promise.all([a?.close(), b?.close()]);
    await etcd.close();
    rmSync(site.dir, { recursive: true, force: true });
  });
  a = await startJetStreamNode(site, "a");
  b = await startJetStreamNode(site, "b");
  k = await spawnNodeK(site);
  await waitUntil(() => a!.routes!.peers().length === 2 && b!.routes!.peers().length === 2, "a full mesh of three");
  const nc = await connect({ servers: a.url, reconnectTimeWait: 100, maxReconnectAttempts: -1 });
  conns.push(nc);
  const jsm = await jetstreamManager(nc);
  const js = jetstream(nc);
  await addStreamLedByK(jsm, "JOBS", ["jobs.>"], { retention: RetentionPolicy.Workqueue, duplicate_window: 120_000_000_000 });
  const placed = () => a!.cluster!.placements.get("$G", "JOBS")?.placement;
  assert.equal(placed()?.leaders[0], "k");
  await jsm.consumers.add("JOBS", { durable_name: "W", ack_policy: AckPolicy.Explicit, filter_subject: "jobs.work" });
  // Each message's subject and de-duplication id: one is acked off the queue, one deleted, one purged, one kept.
  const jobs: Array<[string, string]> = [
    ["jobs.work", "acked"],
    ["jobs.other", "deleted"],
    ["jobs.purged", "purged"],
    ["jobs.other", "kept"],
  ];
  const published: string[] = [];
  for (const [subject, id] of jobs) {
    const ack = await js.publish(subject, id, { msgID: id });
    published.push(`${id}@${ack.seq}`);
  }
  assert.deepEqual(published, ["acked@1", "deleted@2", "purged@3", "kept@4"]);
  const job = await (await js.consumers.get("JOBS", "W")).next({ expires: 5000 });
  assert.equal(job?.seq, 1);
  assert.equal(await job!.ackAck({ timeout: 10_000 }), true);
  assert.equal(await jsm.streams.deleteMessage("JOBS", 2), true);
  await jsm.streams.purge("JOBS", { filter: "jobs.purged" });
  await waitUntilAsync(async () => (await jsm.streams.info("JOBS")).state.messages === 1, "only `kept` left");
  await waitUntil(() => placed()?.isr?.[0].length === 3, "every replica in sync");

  // k dies before it answered anything more; a publisher retries each id within the window.
  await k.stop("SIGKILL");
  k = undefined;
  // Until one does, no node takes a publish. a, whose route to k is gone, tells its client so ("no responders", nats-server's
  // answer while a stream has no leader, which clients may retry) rather than let its request run out its timeout.
  await waitUntil(() => a!.routes!.peers().length === 1, "a's route to k closed");
  const leaderless = await js.publish("jobs.probe", "sent while no node leads", { timeout: 15_000 }).then(
    (ack) => ack,
    (err: Error) => err,
  );
  if (leaderless instanceof Error) assert.ok(noResponders(leaderless), `${leaderless.name}: ${leaderless.message}`);
  // Taken only if a or b led already when a sent it (k's lease ran out before a's route closed: a loaded machine).
  else assert.notEqual(placed()?.leaders[0], "k", `stored at ${leaderless.seq} while k led`);
  await waitUntil(() => placed()?.leaders[0] !== "k", "a or b to take over", 30_000);
  const retried: string[] = [];
  for (const [subject, id] of jobs) {
    const ack = await publishRetried(js, subject, id);
    retried.push(`${id}@${ack.seq}${ack.duplicate ? " duplicate" : ""}`);
  }
  assert.deepEqual(retried, ["acked@1 duplicate", "deleted@2 duplicate", "purged@3 duplicate", "kept@4 duplicate"]);
  assert.equal((await jsm.streams.info("JOBS")).state.messages, leaderless instanceof Error ? 1 : 2, "nothing stored again");
});
