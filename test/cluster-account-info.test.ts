/**
 * An account's JetStream usage in a cluster as its account info tells it
 * (`$JS.API.INFO`, `nats account info`, /jsz's account detail): the
 * account's in the whole cluster, through whichever node is asked, as
 * nats-server 2.9 answers (jsAccountInfoRequest / JetStreamUsage: the
 * storage and memory totals every server reported, each replica's copy
 * counted; streams and consumers from the meta layer's assignments, each
 * once). Each node alone held only its own copies' usage.
 */

import { test } from "node:test";
import assert from "node:assert/strict";
import { AckPolicy, jetstream, jetstreamManager, StorageType, type JetStreamAccountStats } from "@nats-io/jetstream";
import { jetStreamClusterPerFile, startJetStreamNode } from "./helpers/cluster.js";
import { v3Clients } from "./helpers/clients.js";

const clients = v3Clients();
const { nodes, site } = jetStreamClusterPerFile("accinfo", { monitoring: true }, () => clients.closeAll());
const on = (n: string): { placement: { cluster: string; tags: string[] } } => ({ placement: { cluster: "", tags: [`node:${n}`] } });

interface Totals {
  memory: number;
  storage: number;
  streams: number;
  consumers: number;
}

/** Polls `read` until it gives `want` (the exchange between the nodes takes a moment), else fails with what it last gave. */
async function converges(read: () => Promise<Totals>, want: Totals, what: string, ms = 15_000): Promise<void> {
  const deadline = Date.now() + ms;
  let got: Totals;
  for (;;) {
    got = await read();
    if (got.memory === want.memory && got.storage === want.storage && got.streams === want.streams && got.consumers === want.consumers) return;
    if (Date.now() > deadline) break;
    await new Promise((r) => setTimeout(r, 100));
  }
  assert.deepEqual(got, want, what);
}

const totalsOf = (i: JetStreamAccountStats): Totals => ({ memory: i.memory, storage: i.storage, streams: i.streams, consumers: i.consumers });

test("account info tells the account's memory, storage, streams and consumers in the whole cluster through every node, as nats-server", async () => {
  const managers = await Promise.all(nodes.map(async (n) => jetstreamManager(await clients.open(n.url))));
  const js = jetstream(await clients.open(nodes[1].url));
  // One R1 file stream on a, one R1 memory stream on c, one R3 file stream on all three.
  await managers[0].streams.add({ name: "IA", subjects: ["ia"], ...on("a") });
  await managers[1].streams.add({ name: "IM", subjects: ["im"], storage: StorageType.Memory, ...on("c") });
  await managers[2].streams.add({ name: "IR", subjects: ["ir"], num_replicas: 3 });
  for (let i = 0; i < 5; i++) for (const s of ["ia", "im", "ir"]) await js.publish(s, "x".repeat(100 + i));
  // Consumers made through different nodes: each counts once, not once per copy.
  await managers[0].consumers.add("IR", { durable_name: "r1", ack_policy: AckPolicy.Explicit });
  await managers[2].consumers.add("IR", { durable_name: "r2", ack_policy: AckPolicy.Explicit });
  await managers[1].consumers.add("IA", { durable_name: "a1", ack_policy: AckPolicy.Explicit });
  const bytes = async (name: string): Promise<number> => (await managers[0].streams.info(name)).state.bytes;
  const [ia, im, ir] = [await bytes("IA"), await bytes("IM"), await bytes("IR")];
  assert.ok(ia > 0 && im > 0 && ir > 0);
  // nats-server: every replica's bytes (storageTotals), each stream and consumer once (the meta layer's assignments).
  const want: Totals = { memory: im, storage: ia + 3 * ir, streams: 3, consumers: 3 };
  for (const [i, jsm] of managers.entries()) await converges(async () => totalsOf(await jsm.getAccountInfo()), want, `account info through node ${i}`);
  for (const [i, n] of nodes.entries()) {
    await converges(
      async () => {
        const jsz = (await (await fetch(`http://127.0.0.1:${n.httpPort}/jsz?acc=$G`)).json()) as { account_details: Array<{ memory: number; storage: number }> };
        const d = jsz.account_details[0];
        return { memory: d.memory, storage: d.storage, streams: want.streams, consumers: want.consumers };
      },
      want,
      `/jsz's account detail on node ${i}`,
    );
  }
  // The API requests every node answered, as nats-server adds up its servers' (the account info's own answers only add).
  const answered = nodes.reduce((sum, n) => sum + n.jetstream!.apiTotal, 0);
  for (const [i, jsm] of managers.entries()) {
    const deadline = Date.now() + 15_000;
    let total = (await jsm.getAccountInfo()).api.total;
    while (total < answered && Date.now() < deadline) {
      await new Promise((r) => setTimeout(r, 100));
      total = (await jsm.getAccountInfo()).api.total;
    }
    assert.ok(total >= answered, `api.total through node ${i}: ${total} < ${answered}`);
  }

  // Changes reach every node too (an account without limits sends what changed).
  await managers[1].streams.purge("IR");
  await managers[0].consumers.delete("IR", "r2");
  await managers[2].streams.delete("IM");
  const after: Totals = { memory: 0, storage: ia, streams: 2, consumers: 2 };
  for (const [i, jsm] of managers.entries()) await converges(async () => totalsOf(await jsm.getAccountInfo()), after, `account info through node ${i} after a purge and deletes`);
  for (const name of ["IA", "IR"]) await managers[0].streams.delete(name);
});

test("a node started again tells the account's totals at once, though the others' usage has not changed since", async () => {
  const jsm0 = await jetstreamManager(await clients.open(nodes[0].url));
  const js = jetstream(await clients.open(nodes[0].url));
  await jsm0.streams.add({ name: "JA", subjects: ["ja"], ...on("a") });
  await jsm0.streams.add({ name: "JB", subjects: ["jb"], ...on("b") });
  for (let i = 0; i < 3; i++) for (const s of ["ja", "jb"]) await js.publish(s, "y".repeat(50));
  const want: Totals = { memory: 0, storage: (await jsm0.streams.info("JA")).state.bytes + (await jsm0.streams.info("JB")).state.bytes, streams: 2, consumers: 0 };
  await converges(async () => totalsOf(await jsm0.getAccountInfo()), want, "account info through node a");
  // c starts again: a and b hold what they held, so what they told it before is all they would tell until their refresh
  // of an account without limits (30 s): the restart itself (c's subscription to the reports over the new routes, c back
  // among the members) has them tell it.
  await nodes[2].close();
  nodes[2] = await startJetStreamNode(site(), "c", { monitoring: true, routes: [`nats://127.0.0.1:${nodes[0].routes!.port}`] });
  const jsm2 = await jetstreamManager(await clients.open(nodes[2].url));
  await converges(async () => totalsOf(await jsm2.getAccountInfo()), want, "account info through node c started again", 10_000);
  for (const name of ["JA", "JB"]) await jsm0.streams.delete(name);
});
