/**
 * A pull request waiting on a replicated stream's consumer when its leader
 * steps down: the node that stops leading can deliver nothing to it, and
 * the heartbeats it would go on sending hide that from the client, which
 * waits out the request's whole expiry while messages wait on the new
 * leader. It ends the request instead, with its 408 and what it still
 * wanted, so that the client asks again, of the new leader.
 */

import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { connect, createInbox, type NatsConnection } from "@nats-io/transport-node";
import { jetstream, jetstreamManager, AckPolicy } from "@nats-io/jetstream";
import type { NagareServer } from "../src/server/server.js";
import { startEtcd, type EtcdHarness } from "./helpers/etcd.js";
import { startJetStreamNode, uniqueCluster, within } from "./helpers/cluster.js";
import { publishRetrying, waitUntil, waitUntilAsync } from "./helpers/clients.js";

let etcd: EtcdHarness;
let dir: string;
let nodes: NagareServer[] = [];
const conns: NatsConnection[] = [];
const MS = 1_000_000;

before(async () => {
  etcd = await startEtcd();
  dir = mkdtempSync(join(tmpdir(), "nagare-pullsd-"));
  const cluster = uniqueCluster("pullstepdown");
  for (const name of ["a", "b", "c"]) nodes.push(await startJetStreamNode({ etcd: etcd.endpoint, dir, cluster }, name));
  await waitUntil(() => nodes.every((n) => n.routes!.peers().length === 2), "a full mesh of three");
});

after(async () => {
  for (const nc of conns) await nc.close().catch(() => undefined);
  await Promise.all(nodes.map((n) => n.close()));
  await etcd.close();
  rmSync(dir, { recursive: true, force: true });
});

test("a pull waiting on the leader that steps down ends with a 408, and the pull asked again gets what is published after", async () => {
  const [a] = nodes;
  const nc = await connect({ servers: a.url, reconnectTimeWait: 100, maxReconnectAttempts: -1 });
  conns.push(nc);
  const jsm = await jetstreamManager(nc, { timeout: 10_000 });
  await jsm.streams.add({ name: "PSD", subjects: ["psd.>"], num_replicas: 3 });
  const placed = () => a.cluster!.placements.get("$G", "PSD")!.placement;
  await waitUntil(() => placed().isr![0].length === 3, "every replica in sync", 30_000);
  await jsm.consumers.add("PSD", { durable_name: "C", ack_policy: AckPolicy.Explicit });

  // One pull of 20 s, with heartbeats: long past what this test waits for.
  const inbox = createInbox();
  const got: string[] = [];
  let changed: () => void = () => {};
  nc.subscribe(inbox, {
    callback: (_err, m) => {
      if (m.headers?.code === 100) return;
      got.push(m.headers?.code !== undefined && m.data.length === 0 ? `${m.headers.code} ${m.headers.get("Nats-Pending-Messages")}` : m.string());
      changed();
    },
  });
  const pull = (): void => nc.publish("$JS.API.CONSUMER.MSG.NEXT.PSD.C", JSON.stringify({ batch: 1, expires: 20_000 * MS, idle_heartbeat: 1000 * MS }), { reply: inbox });
  pull();
  await waitUntilAsync(async () => (await jsm.consumers.info("PSD", "C")).num_waiting === 1, "the pull waiting on the leader");

  const before = placed().epochs![0];
  const answer = JSON.parse(new TextDecoder().decode((await nc.request("$JS.API.STREAM.LEADER.STEPDOWN.PSD", "", { timeout: 10_000 })).data)) as { success?: boolean };
  assert.equal(answer.success, true, JSON.stringify(answer));
  await waitUntil(() => placed().epochs![0] > before, "a new leader", 30_000);
  await publishRetrying(jetstream(nc), "psd.x", "after", 30_000);

  // As a client does: a pull that ends without a message is asked again.
  await within(
    new Promise<void>((resolve) => {
      changed = () => {
        if (got.includes("after")) return resolve();
        if (got.length > 0 && got[got.length - 1].startsWith("408")) pull();
      };
      changed();
    }).catch(() => undefined),
    10_000,
    `the message published after the step-down (got ${JSON.stringify(got)})`,
  );
  assert.deepEqual(got, ["408 1", "after"]);
});
