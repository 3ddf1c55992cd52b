/**
 * Kafka broker ids in etcd (src/cluster/brokers.ts), against a real etcd:
 * nodes claiming at the same moment get distinct ids, lowest first; a node
 * that comes back under its name gets its id again; a freed name's id is
 * not handed to another node.
 */

import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { BrokerIds } from "../src/cluster/brokers.js";
import { startEtcd, type EtcdHarness } from "./helpers/etcd.js";
import { startTestNode, uniqueCluster, type TestNode } from "./helpers/cluster.js";
import { waitUntil } from "./helpers/clients.js";

let etcd: EtcdHarness;

before(async () => {
  etcd = await startEtcd();
});

after(async () => {
  await etcd.close();
});

test("broker ids: concurrent claims never share an id, and a name keeps its id across restarts", async () => {
  const cluster = uniqueCluster("brokers");
  const names = ["n1", "n2", "n3", "n4"];
  const nodes: TestNode[] = [];
  try {
    for (const name of names) nodes.push(await startTestNode(etcd.endpoint, cluster, name));
    await waitUntil(() => nodes.every((n) => n.node.membership.members().length === names.length), "every node to see the others");
    // All at once, from the same metadata revision: the revision-compared transaction lets one win each id.
    const ids = await Promise.all(nodes.map((n) => new BrokerIds(n.node.metadata, n.node.options.serverName).claim()));
    assert.deepEqual([...ids].sort(), [0, 1, 2, 3]);
    const view = new BrokerIds(nodes[0].node.metadata, "n1");
    await waitUntil(() => view.all().size === 4, "n1 to see every claim");
    assert.deepEqual(Object.fromEntries(view.all()), Object.fromEntries(names.map((n, i) => [n, ids[i]])));

    // n2 leaves and comes back: the same id, however often it claims.
    const n2id = ids[1];
    await nodes[1].node.leave();
    nodes[1] = await startTestNode(etcd.endpoint, cluster, "n2");
    const again = new BrokerIds(nodes[1].node.metadata, "n2");
    assert.equal(await again.claim(), n2id);
    assert.equal(await again.claim(), n2id);
    // A new name gets the next free id, not n2's (held by its name while it was away).
    nodes.push(await startTestNode(etcd.endpoint, cluster, "n5"));
    assert.equal(await new BrokerIds(nodes[4].node.metadata, "n5").claim(), 4);
  } finally {
    for (const n of nodes) await n.node.leave();
  }
});
