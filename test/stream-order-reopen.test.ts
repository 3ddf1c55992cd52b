/**
 * A stream with several partitions numbers its messages in order.map
 * (stream-order.ts). A write of it that failed (a disk full for a moment)
 * stopped the order for good: every later publish to the stream was
 * refused, and the messages its partitions stored meanwhile stayed hidden
 * from readers, until the server restarted, although the partitions' own
 * logs reopen and take writes again once the disk does. The order is now
 * reopened as they are: after a pause, doubling.
 */

import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { jetstream, jetstreamManager } from "@nats-io/jetstream";
import { createTopic, startKafka, type KafkaHarness } from "./helpers/kafka.js";
import { waitUntilAsync } from "./helpers/clients.js";

let h: KafkaHarness;
before(async () => (h = await startKafka()));
after(() => h.close());

test("a stream order whose write failed takes runs again, and publishes, once its file does", async () => {
  await createTopic(h, "ordered", 2);
  const js = jetstream(h.nc);
  assert.equal((await js.publish("ordered", "a")).seq, 1);

  // The next write of order.map fails, as on a full disk; the one after succeeds.
  const stream = h.srv.jetstream!.streams.get("ordered")!;
  const file = (stream as unknown as { order: { file: { write(...a: unknown[]): Promise<number> } } }).order.file;
  const write = file.write.bind(file);
  let failures = 1;
  file.write = (...a: unknown[]) => (failures-- > 0 ? Promise.reject(Object.assign(new Error("ENOSPC: no space left on device, write (injected)"), { code: "ENOSPC" })) : write(...a));
  await assert.rejects(js.publish("ordered", "b"), /ENOSPC/);

  // Before: refused with the same error for as long as the server ran (40 s and more).
  await waitUntilAsync(
    async () => {
      try {
        await js.publish("ordered", "c", { timeout: 2000 });
        return true;
      } catch {
        return false;
      }
    },
    "a publish to the stream to be stored again",
    20_000,
  );
  const info = await (await jetstreamManager(h.nc)).streams.info("ordered");
  assert.equal((info.state as { storage_error?: string }).storage_error, undefined, "no storage error reported any more");
  // Every message the partitions stored has its stream sequence: "b" too (refused, yet stored), and every "c" tried.
  assert.equal(info.state.last_seq, stream.partitions.reduce((n, p) => n + p.state().messages, 0));
  const m = await (await jetstreamManager(h.nc)).streams.getMessage("ordered", { seq: 2 });
  assert.equal(m?.string(), "b");
});
