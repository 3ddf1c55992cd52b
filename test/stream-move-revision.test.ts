/**
 * A move's target may see the move in etcd before its leader does (the
 * move recorded through the target itself, or the leader's watch behind):
 * its requests name the placement's revision it saw, and the leader
 * answers once its own copy has it instead of refusing, which would cancel
 * the move for nothing. The leader's host is a stand-in (as
 * stream-replicas-step-aside.test.ts): its copy of the placement lags
 * until the move's revision is waited for.
 */

import { test } from "node:test";
import assert from "node:assert/strict";
import { jetstream, jetstreamManager } from "@nats-io/jetstream";
import { StreamMover, type MoveHost } from "../src/streams/stream-move.js";
import type { ClusterStreams, PlacedStream } from "../src/streams/cluster-streams.js";
import { decodeBatch } from "../src/streams/copy-batch.js";
import { startJs } from "./helpers/js.js";

test("a copy request naming a revision the leader has not seen is answered once it has, not refused", async () => {
  const h = await startJs();
  const mover: { m: StreamMover | null } = { m: null };
  try {
    await (await jetstreamManager(h.nc)).streams.add({ name: "S", subjects: ["s"] });
    const js = jetstream(h.nc);
    for (let i = 0; i < 5; i++) await js.publish("s", `m${i}`);
    const jss = h.srv.jetstream!;
    const placed = (moving: boolean): PlacedStream => ({
      account: jss.account.name,
      stream: "S",
      leaders: ["a"],
      tags: [],
      cluster: "c",
      subjects: ["s"],
      origin: "jetstream",
      config: {},
      created: new Date().toISOString(),
      ...(moving ? { moving: { partition: 0, to: "b", id: "m1" } } : {}),
    });
    // The leader's copy: revision 5 without the move until the move's revision, 7, is waited for.
    let current = { placement: placed(false), revision: 5 };
    const waited: number[] = [];
    const directory = {
      get: () => current,
      waitForRevision: async (rev: number) => {
        waited.push(rev);
        current = { placement: placed(true), revision: rev };
        return true;
      },
      onMembers: () => () => {},
    };
    const cluster = { self: "a", directory, moveListeners: new Set() } as unknown as ClusterStreams;
    const answers: Buffer[] = [];
    let answered: () => void = () => {};
    const host = { js: jss, cluster, answer: (_reply: string, b: Buffer) => (answers.push(b), answered()) } as unknown as MoveHost;
    mover.m = new StreamMover(host);
    const ask = (rev: number) =>
      new Promise<Buffer>((resolve) => {
        answered = () => resolve(answers[answers.length - 1]);
        mover.m!.serve("COPY.S", Buffer.from(JSON.stringify({ from: 1, partition: 0, maxBytes: 65536, rev })), "reply");
      });

    // A request naming no revision the leader lacks (an older target's) is answered from its copy as it stands: refused.
    const refused = JSON.parse((await ask(0)).toString()) as { error?: string };
    assert.match(String(refused.error), /not being moved from a/);
    assert.deepEqual(waited, []);
    // Naming revision 7: answered once the leader's copy has it, with the partition's records.
    const items = decodeBatch(await ask(7));
    assert.deepEqual(waited, [7]);
    assert.deepEqual(
      items.map((m) => ("seq" in m ? m.seq : -1)),
      [1, 2, 3, 4, 5],
    );
  } finally {
    mover.m?.close();
    await h.close();
  }
});
