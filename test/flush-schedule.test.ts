/**
 * The broker's flush schedule: what a read queues is written at the end of
 * that read, or (a TLS connection's reads) once the turn's reads are done, so
 * that the several 'data' events a TLS socket makes of one TCP read give one
 * write per receiver.
 */

import { test } from "node:test";
import assert from "node:assert/strict";
import { Broker, type Connection, type ConnectionInfo } from "../src/core/broker.js";
import { resolveOptions } from "../src/core/options.js";
import { createLogger } from "../src/util/log.js";

class Receiver implements Connection {
  flushes = 0;
  constructor(readonly cid: number) {}
  flushOutbound(): void {
    this.flushes++;
  }
  tick(): void {}
  info(): ConnectionInfo {
    throw new Error("not asked");
  }
  notifyLameDuck(): void {}
  close(): void {}
}

const nextTurn = (): Promise<void> => new Promise((resolve) => setImmediate(resolve));

test("a read's deliveries are flushed when it ends; deferred reads flush once, after the turn's reads", async () => {
  const broker = new Broker(resolveOptions({}), createLogger({ noLog: true, debug: false, trace: false }));
  try {
    const a = new Receiver(1);
    const b = new Receiver(2);

    broker.beginRead(null);
    broker.markDirty(a);
    broker.endRead();
    assert.equal(a.flushes, 1, "a plain read flushes as it ends");

    // Three reads in one turn, as a TLS socket delivers one TCP read: nothing is written until they are all done.
    for (let i = 0; i < 3; i++) {
      broker.beginRead(null);
      broker.markDirty(a);
      broker.markDirty(b);
      broker.endRead(true);
    }
    assert.deepEqual([a.flushes, b.flushes], [1, 0]);
    await nextTurn();
    assert.deepEqual([a.flushes, b.flushes], [2, 1], "one flush per receiver for the three reads");

    // A plain read after deferred ones writes everything queued; the scheduled flush then finds nothing.
    broker.beginRead(null);
    broker.markDirty(b);
    broker.endRead(true);
    broker.beginRead(null);
    broker.markDirty(a);
    broker.endRead();
    assert.deepEqual([a.flushes, b.flushes], [3, 2]);
    await nextTurn();
    assert.deepEqual([a.flushes, b.flushes], [3, 2]);
  } finally {
    broker.stop();
  }
});
