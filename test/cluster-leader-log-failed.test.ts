/**
 * A leader whose log fails and stays failed (its disk full, say) hands the
 * partition to a live in-sync replica, which takes writes while the old
 * leader cannot; nothing acknowledged before is lost, and the old leader
 * rejoins the in-sync replicas once its disk takes writes again.
 */

import { test } from "node:test";
import assert from "node:assert/strict";
import { jetstream, jetstreamManager, type PubAck } from "@nats-io/jetstream";
import { jetStreamClusterPerFile } from "./helpers/cluster.js";
import { v3Clients, waitUntil, waitUntilAsync } from "./helpers/clients.js";

const clients = v3Clients();
const { nodes } = jetStreamClusterPerFile("leaderfail", {}, () => clients.closeAll());

test("a leader whose log stays failed hands the partition to an in-sync replica, and rejoins once its disk takes writes", async () => {
  const nc = await clients.open(nodes[0].url);
  const jsm = await jetstreamManager(nc);
  const info = await jsm.streams.add({ name: "FULL", subjects: ["full.>"], num_replicas: 3 });
  const old = nodes.find((n) => n.cluster!.options.serverName === info.cluster?.leader)!;
  const oldName = old.cluster!.options.serverName;
  const js = jetstream(nc);
  for (let i = 1; i <= 5; i++) assert.equal((await js.publish("full.x", `m${i}`)).seq, i);

  const placed = () => nodes[0].cluster!.placements.get("$G", "FULL")?.placement;
  await waitUntil(() => placed()?.isr?.[0]?.length === 3, "all three replicas in sync");
  // The leader's disk refuses every write from now on, also the reopen's check that it takes writes.
  const log = old.jetstream!.streams.get("FULL")!.partitions[0] as unknown as { faults: unknown };
  let full = true;
  const enospc = Object.assign(new Error("ENOSPC: no space left on device (injected)"), { code: "ENOSPC" });
  log.faults = { write: () => (full ? { error: enospc } : null), sync: () => null };
  await assert.rejects(js.publish("full.x", "refused", { timeout: 10_000 }), "a publish the failed leader cannot store");

  await waitUntil(() => placed()?.leaders[0] !== oldName, "another replica leads", 30_000);
  assert.ok(!placed()!.isr![0].includes(oldName), "the failed leader left the in-sync replicas");
  // Writes go on: the client retries through the new leader.
  // The old leader, its log failed, must not count as in sync meanwhile: the new leader's acknowledgements would wait on it.
  let rejoined = false;
  let ack: PubAck | undefined;
  await waitUntilAsync(async () => {
    if (placed()?.isr?.[0]?.includes(oldName)) rejoined = true;
    return (ack = await js.publish("full.x", "m6", { timeout: 2000 }).catch(() => undefined)) !== undefined;
  }, "a publish acknowledged by the new leader", 30_000);
  assert.equal(rejoined, false, "the failed old leader was taken back into the in-sync replicas");
  const stored = await jsm.streams.info("FULL");
  assert.equal(stored.state.messages, ack!.seq, "every acknowledged message kept, none in between");
  for (let i = 1; i <= 5; i++) assert.equal(new TextDecoder().decode((await jsm.streams.getMessage("FULL", { seq: i }))!.data), `m${i}`);

  full = false;
  await waitUntil(() => placed()?.isr?.[0]?.includes(oldName) === true, "the old leader back in sync once its disk takes writes", 60_000);
  const copy = old.jetstream!.streams.get("FULL")!.partitions[0];
  assert.equal(copy.state().lastSeq, ack!.seq, "its copy ends where the new leader's does");
  assert.equal(copy.state().error, null);
});
