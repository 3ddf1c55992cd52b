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

test("a leader whose nearly full disk lets each reopen through but refuses every write hands the partition over", async () => {
  const nc = await clients.open(nodes[0].url);
  const jsm = await jetstreamManager(nc);
  const info = await jsm.streams.add({ name: "NEARLY", subjects: ["nearly.>"], num_replicas: 3 });
  const old = nodes.find((n) => n.cluster!.options.serverName === info.cluster?.leader)!;
  const oldName = old.cluster!.options.serverName;
  const js = jetstream(nc);
  assert.equal((await js.publish("nearly.x", "m1")).seq, 1);
  const placed = () => nodes[0].cluster!.placements.get("$G", "NEARLY")?.placement;
  await waitUntil(() => placed()?.isr?.[0]?.length === 3, "all three replicas in sync");

  // Each reopen's probe goes through and every batch fails (a next batch larger than the one that failed): each reopen
  // succeeds and the next write fails again.
  const copy = old.jetstream!.streams.get("NEARLY")!.partitions[0];
  const enospc = Object.assign(new Error("ENOSPC: no space left on device (injected)"), { code: "ENOSPC" });
  // Reopened 100 ms after each failure (1 s by default): each failure is far shorter than the 2 s a leader allows one.
  Object.assign(copy, { faults: { write: (name: string) => (name === "probe.tmp" ? null : { error: enospc }), sync: () => null }, reopenDelayMs: 100 });
  // A quiet publisher: the log is failed for moments, never 2 s in a row.
  let refused = 0;
  for (let round = 0; round < 6 && placed()?.leaders[0] === oldName; round++) {
    await waitUntil(() => copy.state().error === null || placed()?.leaders[0] !== oldName, "the failed log reopened", 30_000);
    if (placed()?.leaders[0] !== oldName) break;
    // The workload, not a synchronisation: a publisher writing once every couple of seconds, so the log sits reopened
    // between writes long enough for the leader's checks (every 500 ms) to see it taking writes.
    await new Promise((r) => setTimeout(r, 1500));
    if (await js.publish("nearly.x", "refused", { timeout: 5000 }).then(() => false, () => true)) refused++;
  }
  // The second failure comes within 10 s of the first reopen, with no write landed: the failure of 2.5 s before counts.
  assert.notEqual(placed()?.leaders[0], oldName, `still the leader after ${refused} refused writes on a disk that takes none`);
  assert.ok(refused <= 2, `handed over only after ${refused} refused writes`);
  let ack: PubAck | undefined;
  await waitUntilAsync(async () => (ack = await js.publish("nearly.x", "m2", { timeout: 2000 }).catch(() => undefined)) !== undefined, "a publish acknowledged by the new leader", 30_000);
  assert.equal((await jsm.streams.getMessage("NEARLY", { seq: 1 }))!.string(), "m1");
  assert.ok(ack!.seq >= 2);
});

test("when every replica's disk is nearly full, leadership goes round once and stays, and the replicas rejoin once their disks take writes", async () => {
  const nc = await clients.open(nodes[0].url);
  const jsm = await jetstreamManager(nc);
  await jsm.streams.add({ name: "ALLFULL", subjects: ["allfull.>"], num_replicas: 3 });
  const js = jetstream(nc);
  assert.equal((await js.publish("allfull.x", "m1")).seq, 1);
  const placed = () => nodes[0].cluster!.placements.get("$G", "ALLFULL")?.placement;
  await waitUntil(() => placed()?.isr?.[0]?.length === 3, "all three replicas in sync");
  const start = placed()!.epochs?.[0] ?? 1;

  // Every copy's disk has room for 8 bytes and none for a batch, until `full` is cleared.
  let full = true;
  const enospc = Object.assign(new Error("ENOSPC: no space left on device (injected)"), { code: "ENOSPC" });
  for (const n of nodes) {
    const copy = n.jetstream!.streams.get("ALLFULL")!.partitions[0];
    Object.assign(copy, { faults: { write: (_name: string, length: number) => (full && length > 8 ? { error: enospc } : null), sync: () => null }, reopenDelayMs: 100 });
  }
  // The workload, not a synchronisation: a publisher retrying every few hundred ms, as a client whose writes are refused does.
  const publishFor = async (until: () => boolean, ms: number): Promise<void> => {
    const deadline = Date.now() + ms;
    while (!until() && Date.now() < deadline) {
      await js.publish("allfull.x", "refused", { timeout: 1000 }).catch(() => undefined);
      await new Promise((r) => setTimeout(r, 300));
    }
  };
  // Each failing leader hands over to an in-sync replica and leaves the ISR: two hand-overs leave the last one alone in it.
  await publishFor(() => (placed()?.epochs?.[0] ?? 1) >= start + 2, 60_000);
  const settled = placed()!;
  assert.ok((settled.epochs?.[0] ?? 1) >= start + 2, "the failing leaders handed the partition over");
  // Several hand-overs' worth of failing writes (each took about 2.5 s): a replica that took no write since its disk
  // failed must not be taken back into the ISR and handed the partition again.
  await publishFor(() => false, 12_000);
  assert.equal(placed()!.epochs?.[0], settled.epochs?.[0], `leadership went on round replicas whose disks take no writes (ISR ${placed()!.isr?.[0]?.join(",")})`);
  assert.deepEqual(placed()!.isr?.[0], [settled.leaders[0]]);

  full = false;
  let ack: PubAck | undefined;
  await waitUntilAsync(async () => (ack = await js.publish("allfull.x", "m2", { timeout: 2000 }).catch(() => undefined)) !== undefined, "a publish acknowledged once the disks take writes", 60_000);
  await waitUntil(() => placed()?.isr?.[0]?.length === 3, "every replica back in sync once its disk takes writes", 60_000);
  assert.equal((await jsm.streams.getMessage("ALLFULL", { seq: 1 }))!.string(), "m1");
  assert.equal((await jsm.streams.getMessage("ALLFULL", { seq: ack!.seq }))!.string(), "m2");
});
