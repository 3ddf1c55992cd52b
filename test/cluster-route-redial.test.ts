/**
 * A configured route's re-dials back off while they fail, and start again
 * from the shortest wait once the route was up for a while. The attempts of
 * every outage added up: after a route had dropped and come back a few
 * times, every later drop (even after hours up) waited the longest back-off
 * (5 s) before its first re-dial. Here B dials A through a proxy whose
 * connections the test cuts.
 */

import { test } from "node:test";
import assert from "node:assert/strict";
import { startServer, type NagareServer } from "../src/index.js";
import { waitUntil } from "./helpers/clients.js";
import { FaultNet } from "./helpers/tcp-proxy.js";

/** How long a route must stay up to count as a working one (routes.ts ROUTE_STABLE_MS). */
const ROUTE_STABLE_MS = 5_000;

test("a route that was up for a while is re-dialled from the shortest back-off, whatever earlier outages counted", async () => {
  const net = new FaultNet();
  let a: NagareServer | undefined;
  let b: NagareServer | undefined;
  try {
    a = await startServer({ host: "127.0.0.1", port: -1, cluster: { name: "redial", host: "127.0.0.1", port: -1 } });
    const toA = await net.proxy("a", a.routes!.port, { from: "b" });
    b = await startServer({ host: "127.0.0.1", port: -1, cluster: { name: "redial", host: "127.0.0.1", port: -1, routes: [`nats://127.0.0.1:${toA.port}`] } });
    const bNode = b;
    const attempts = (): number => bNode.routes!.dialling()[0].attempts;
    let registeredAt = 0;
    const up = async (what: string): Promise<void> => {
      await waitUntil(() => bNode.routes!.routeCount === 1, what, 20_000);
      registeredAt = Date.now();
    };
    await up("B's route to A");
    // Two drops at once after the route came up: each re-dial counts.
    for (let i = 0; i < 2; i++) {
      assert.equal(net.cut("b", "a"), 1, "the route is cut");
      await waitUntil(() => bNode.routes!.routeCount === 0, "B sees its route gone");
      await up(`B's route to A again (${i + 1})`);
    }
    assert.equal(attempts(), 3, "the quick drops backed off");
    // The route stays up as long as a working one does, then drops.
    await waitUntil(() => Date.now() - registeredAt > ROUTE_STABLE_MS + 200, "the route up for a while", ROUTE_STABLE_MS + 5_000);
    assert.equal(net.cut("b", "a"), 1, "the route is cut");
    await waitUntil(() => bNode.routes!.routeCount === 0, "B sees its route gone");
    await up("B's route to A after the drop");
    // One dial since the drop: before, the fourth in a row, made after 2 s (the back-off of the third).
    assert.equal(attempts(), 1, "the route that was up re-dialled as a fresh one");
  } finally {
    await Promise.all([a?.close(), b?.close()]);
    await net.close();
  }
});
