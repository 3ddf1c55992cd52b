/**
 * The stream order on its own (stream-order.ts): tens of thousands of
 * one-record runs over three partitions, so that most pages of runs live
 * only in order.map; reads by stream sequence against a plain model, a
 * reopen, a torn last run, a partition purged below the others, and a
 * partition held back by the door's stable sequence.
 */

import { describe, test, before, after } from "node:test";
import assert from "node:assert/strict";
import { mkdtempSync, rmSync, appendFileSync, statSync, existsSync, readFileSync, truncateSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { MemoryLog } from "../src/store/memory-log.js";
import { appendAsync } from "../src/store/log.js";
import { ORDER_FILE, ORDER_MARK_FILE, ORDER_PAGES_FILE, OrderDamage, StreamOrder } from "../src/streams/stream-order.js";
import type { Visibility } from "../src/streams/visibility.js";

describe("stream order", () => {
  let dir: string;
  before(() => {
    dir = mkdtempSync(join(tmpdir(), "nagare-order-"));
  });
  after(() => rmSync(dir, { recursive: true, force: true }));

  test("one-record runs over three partitions: reads by stream sequence, paged, across a reopen and a torn run", async () => {
    const parts = [new MemoryLog(), new MemoryLog(), new MemoryLog()];
    const open = (): Promise<StreamOrder> => StreamOrder.open(dir, parts, () => null, () => undefined, (err) => assert.fail(err.message));
    let order = await open();
    // model[streamSeq - 1] = value; a run per record, partitions in a pattern that is not round robin.
    const model: string[] = [];
    const N = 40_000;
    for (let i = 0; i < N; i++) {
      const p = (i * 7 + (i >> 3)) % 3;
      const value = `r${i}`;
      await appendAsync(parts[p], { subject: `s.${i % 5}`, data: Buffer.from(value) });
      (order as unknown as { catchUp(): void }).catchUp();
      model.push(value);
    }
    await order.flush();
    assert.equal(statSync(join(dir, ORDER_FILE)).size, N * 32, "one 32-byte run per record");
    const inMemory = (o: StreamOrder): number => (o as unknown as { pages: Array<{ runs: unknown }> }).pages.filter((p) => p.runs !== null).length;

    const check = async (o: StreamOrder): Promise<void> => {
      const view = o.view();
      assert.equal(view.state().lastSeq, N);
      assert.equal(view.state().messages, N);
      for (const seq of [1, 2, 4095, 4096, 4097, 12_345, 30_000, N]) assert.equal((await view.get(seq))?.data.toString(), model[seq - 1], `seq ${seq}`);
      // A whole read, window by window, as a consumer reads.
      let from = 1;
      let read = 0;
      for (;;) {
        const batch = await view.scan(from, { maxMessages: 1000 });
        if (batch.length === 0) break;
        for (const m of batch) {
          assert.equal(m.data.toString(), model[m.seq - 1]);
          read++;
        }
        from = batch[batch.length - 1].seq + 1;
      }
      assert.equal(read, N);
      // A filtered read and the pending count agree with the model.
      const wanted = model.filter((_, i) => i % 5 === 3).length;
      assert.equal(view.pendingAfter(0, "s.3"), wanted);
      assert.equal(view.pendingAfter(N / 2, "s.3"), model.filter((_, i) => i >= N / 2 && i % 5 === 3).length);
      const filtered = await view.scan(20_001, { filter: "s.3", maxMessages: 3 });
      assert.deepEqual(
        filtered.map((m) => m.seq),
        [20_004, 20_009, 20_014],
      );
      // Most pages are on disk only: memory does not grow with the runs.
      assert.ok(inMemory(o) <= 9, `${inMemory(o)} pages in memory`);
    };
    await check(order);
    await order.close();

    // A crash mid-write leaves a torn run: cut off at open, the rest read back.
    appendFileSync(join(dir, ORDER_FILE), Buffer.alloc(20, 7));
    order = await open();
    assert.equal(statSync(join(dir, ORDER_FILE)).size % 32, 0);
    await check(order);

    // Records stored and not yet in a run (a crash before the order's sync) get runs at the next open.
    await appendAsync(parts[1], { subject: "s.x", data: Buffer.from("late") });
    await order.close();
    order = await open();
    assert.equal((await order.view().get(N + 1))?.data.toString(), "late");

    // A partition purged ahead of the others: the first stream sequence is the oldest record still stored anywhere.
    await parts[0].purge({});
    await parts[2].purge({});
    const firstOfP1 = order.streamSeqOf(1, parts[1].state().firstSeq);
    assert.equal(order.view().state().firstSeq, firstOfP1);
    await order.close();
  });

  test("a damaged or lost order.map stops the stream instead of numbering its messages again", async () => {
    // An outside test cut or deleted order.map after a clean stop: the open numbered the partitions' messages anew, and
    // over a thousand acknowledged stream sequences then named other messages.
    const built = async (): Promise<{ d: string; parts: MemoryLog[]; open: () => Promise<StreamOrder> }> => {
      const d = mkdtempSync(join(dir, "damage-"));
      const parts = [new MemoryLog(), new MemoryLog()];
      const open = (): Promise<StreamOrder> => StreamOrder.open(d, parts, () => null, () => undefined, (err) => assert.fail(err.message));
      const order = await open();
      for (let i = 0; i < 3000; i++) {
        await appendAsync(parts[i % 3 === 0 ? 1 : 0], { subject: "s", data: Buffer.from(`r${i}`) });
        (order as unknown as { catchUp(): void }).catchUp();
      }
      await order.flush();
      await order.close();
      return { d, parts, open };
    };
    const map = (d: string): string => join(d, ORDER_FILE);

    const cut = await built();
    assert.ok(existsSync(join(cut.d, ORDER_PAGES_FILE)), "a clean close leaves its summary");
    truncateSync(map(cut.d), 1000 * 32);
    await assert.rejects(cut.open(), (e: Error) => e instanceof OrderDamage && /holds 32000 bytes where its clean close left/.test(e.message));
    await assert.rejects(cut.open(), OrderDamage, "and still at the next open");

    // The same cut after a crash (no summary): order.mark says how far runs were durable. An outside test cut order.map at a
    // run boundary after a kill -9, and the records past the cut were numbered again with nothing said.
    const crashCut = await built();
    rmSync(join(crashCut.d, ORDER_PAGES_FILE));
    truncateSync(map(crashCut.d), 1000 * 32);
    await assert.rejects(crashCut.open(), (e: Error) => e instanceof OrderDamage && /ends at stream sequence 1000 where order\.mark says 3000 were durable/.test(e.message));
    await assert.rejects(crashCut.open(), OrderDamage, "and still at the next open");

    const flipped = await built();
    rmSync(join(flipped.d, ORDER_PAGES_FILE));
    const bytes = readFileSync(map(flipped.d));
    bytes[500 * 32 + 3] ^= 0x40;
    writeFileSync(map(flipped.d), bytes);
    await assert.rejects(flipped.open(), (e: Error) => e instanceof OrderDamage && /damaged at byte 16000, with intact runs after it/.test(e.message));

    const gone = await built();
    rmSync(map(gone.d));
    rmSync(join(gone.d, ORDER_PAGES_FILE));
    await assert.rejects(gone.open(), (e: Error) => e instanceof OrderDamage && /is gone while partition 1 holds messages/.test(e.message));

    // Zeros where a clean close left runs (its summary says the file was whole): damage, not a torn tail. An outside test
    // zeroed the last 4 KiB after a clean stop; the zeros were cut as a torn tail and the messages were numbered again.
    const zeroed = await built();
    const z = readFileSync(map(zeroed.d));
    z.fill(0, z.length - 4096);
    writeFileSync(map(zeroed.d), z);
    await assert.rejects(zeroed.open(), (e: Error) => e instanceof OrderDamage && /last run is not the one its clean close left/.test(e.message));
    await assert.rejects(zeroed.open(), OrderDamage, "and still at the next open");

    // Zeros with runs after them (a power loss kept a later page of unsynced runs, not an earlier one): a torn tail.
    const hole = await built();
    rmSync(join(hole.d, ORDER_PAGES_FILE));
    // Its mark, written after each sync, could not have named those runs either.
    rmSync(join(hole.d, ORDER_MARK_FILE));
    const holed = readFileSync(map(hole.d));
    holed.fill(0, 2000 * 32, 2128 * 32);
    writeFileSync(map(hole.d), holed);
    const cutAtHole = await hole.open();
    assert.ok(statSync(map(hole.d)).size < 3000 * 32, "cut at the hole");
    assert.equal(cutAtHole.view().state().lastSeq, 3000, "what it cut is numbered again");
    await cutAtHole.close();

    // A torn last run (a crash mid-write) is still cut off, and the rest read back.
    const torn = await built();
    rmSync(join(torn.d, ORDER_PAGES_FILE));
    appendFileSync(map(torn.d), Buffer.alloc(32, 7));
    const order = await torn.open();
    assert.equal((await order.view().get(3000))?.data.toString(), "r2999");
    await order.close();
  });

  test("a run damaged on disk after a clean close is refused when its page is read back, and a damaged summary is not used", async () => {
    // An outside test flipped a bit in order.map of a stopped stream: the clean close's summary let the open skip the runs,
    // and MSG.GET of sequence 2 then served sequence 3's message.
    const built = async (): Promise<{ d: string; open: (errors?: string[]) => Promise<StreamOrder> }> => {
      const d = mkdtempSync(join(dir, "rot-"));
      const parts = [new MemoryLog(), new MemoryLog()];
      const open = (errors?: string[]): Promise<StreamOrder> =>
        StreamOrder.open(d, parts, () => null, () => undefined, (err) => (errors !== undefined ? errors.push(err.message) : assert.fail(err.message)));
      const order = await open();
      // A run per record: three pages, the first two read back from the file once reopened from the summary.
      for (let i = 0; i < 10_000; i++) {
        await appendAsync(parts[i % 2], { subject: "s", data: Buffer.from(`r${i}`) });
        (order as unknown as { catchUp(): void }).catchUp();
      }
      await order.flush();
      await order.close();
      return { d, open };
    };
    const map = (d: string): string => join(d, ORDER_FILE);

    // In the middle page: the open reads the first and the newest, and goes on; a read of the damaged page is refused.
    const rot = await built();
    assert.ok(existsSync(join(rot.d, ORDER_PAGES_FILE)));
    const bytes = readFileSync(map(rot.d));
    bytes[5000 * 32 + 8] ^= 0x02; // run 5001's partition sequence, 2501 becomes 2503
    writeFileSync(map(rot.d), bytes);
    const errors: string[] = [];
    const order = await rot.open(errors);
    const view = order.view();
    assert.equal((await view.get(9_999))?.data.toString(), "r9998", "the newest page, in memory, reads");
    assert.equal((await view.get(2))?.data.toString(), "r1", "the first page reads");
    await assert.rejects(view.get(5001), (e: Error) => e instanceof OrderDamage && /order.map is damaged at byte 160000, read back/.test(e.message));
    await assert.rejects(view.scan(4500), OrderDamage, "and every read of that page");
    assert.equal(errors.length, 1, "reported once");
    assert.match(view.state().error ?? "", /order.map is damaged at byte 160000/, "the stream's storage error says so");
    await order.close();

    // In the first page (where the first stored message is): the open itself stops, as for damage found by a full read.
    const head = await built();
    const headBytes = readFileSync(map(head.d));
    headBytes[1 * 32 + 8] ^= 0x02;
    writeFileSync(map(head.d), headBytes);
    await assert.rejects(head.open([]), (e: Error) => e instanceof OrderDamage && /damaged at byte 32, read back/.test(e.message));

    // The summary changed on disk (a value inside it, still valid JSON): not used; every run is read and checked instead.
    const summary = await built();
    const pages = join(summary.d, ORDER_PAGES_FILE);
    const text = readFileSync(pages, "utf8");
    const changed = text.replace('"pages":[[1,', '"pages":[[3,');
    assert.notEqual(changed, text);
    writeFileSync(pages, changed);
    const reread = await summary.open();
    for (const seq of [1, 2, 3, 5000, 10_000]) assert.equal((await reread.view().get(seq))?.data.toString(), `r${seq - 1}`, `seq ${seq}`);
    assert.equal(existsSync(pages), false, "the damaged summary is gone");
    await reread.close();
  });

  test("a first page damaged on disk while the stream runs stops the order when the write loop reads it back, without a crash", async () => {
    const d = mkdtempSync(join(dir, "running-"));
    const parts = [new MemoryLog(), new MemoryLog()];
    const errors: string[] = [];
    const open = (): Promise<StreamOrder> => StreamOrder.open(d, parts, () => null, () => undefined, (err) => errors.push(err.message));
    let order = await open();
    for (let i = 0; i < 12 * 4096; i++) {
      await appendAsync(parts[i % 2], { subject: "s", data: Buffer.from(`r${i}`) });
      (order as unknown as { catchUp(): void }).catchUp();
    }
    await order.flush();
    await order.close();
    // Reopened from the summary; every other page read, so that the first leaves memory.
    order = await open();
    const view = order.view();
    for (let page = 1; page < 12; page++) assert.equal((await view.get(page * 4096 + 1))?.data.toString(), `r${page * 4096}`);
    const bytes = readFileSync(join(d, ORDER_FILE));
    bytes[3 * 32 + 8] ^= 0x02;
    writeFileSync(join(d, ORDER_FILE), bytes);
    // More records: the write loop looks at the first page (is a compaction due?) and finds it damaged.
    await appendAsync(parts[0], { subject: "s", data: Buffer.from("late") });
    (order as unknown as { catchUp(): void }).catchUp();
    await order.flush();
    assert.equal(errors.length, 1, errors.join("; "));
    assert.match(errors[0], /order.map is damaged at byte 96, read back/);
    assert.match(view.state().error ?? "", /damaged/);
    await order.close();
  });

  test("a partition held back by the door's stable sequence holds back only itself", async () => {
    const sub = mkdtempSync(join(dir, "stable-"));
    const parts = [new MemoryLog(), new MemoryLog()];
    let stable1 = 1;
    const v: Visibility = {
      stableSeq: (p) => (p === 1 ? stable1 : Infinity),
      hidden: (p, seq) => p === 1 && seq === 3,
      hiddenIn: (p, after, upTo) => (p === 1 && after < 3 && upTo >= 3 ? [[3, 3]] : []),
    };
    const order = await StreamOrder.open(sub, parts, () => v, () => undefined, (err) => assert.fail(err.message));
    for (const [p, value] of [[1, "a1"], [1, "open"], [1, "marker"], [0, "b1"], [0, "b2"]] as const) {
      await appendAsync(parts[p], { subject: "x", data: Buffer.from(value) });
    }
    order.landed();
    await new Promise((r) => setImmediate(r));
    await order.flush();
    const view = order.view();
    const values = async (): Promise<string[]> => (await view.scan(1, {})).map((m) => m.data.toString());
    // One catch-up hands out sequences partition by partition.
    assert.deepEqual(await values(), ["b1", "b2", "a1"]);
    assert.equal(view.pendingAfter(0), 3);
    // The transaction ends: its record follows in stream order, its marker stays hidden.
    stable1 = Infinity;
    order.landed();
    await new Promise((r) => setImmediate(r));
    await order.flush();
    assert.deepEqual(await values(), ["b1", "b2", "a1", "open"]);
    assert.equal(view.pendingAfter(0), 4);
    assert.equal(await view.get(5), null, "the marker's stream sequence reads as no message");
    await order.close();
  });

  test("order.map drops runs every partition has dropped, keeps numbering, and a clean close lets open skip the runs", async () => {
    const sub = mkdtempSync(join(dir, "compact-"));
    const file = join(sub, ORDER_FILE);
    const parts = [new MemoryLog(), new MemoryLog(), new MemoryLog()];
    const open = (): Promise<StreamOrder> => StreamOrder.open(sub, parts, () => null, () => undefined, (err) => assert.fail(err.message));
    const catchUp = (o: StreamOrder): void => (o as unknown as { catchUp(): void }).catchUp();
    const inMemory = (o: StreamOrder): number => (o as unknown as { pages: Array<{ runs: unknown }> }).pages.filter((p) => p.runs !== null).length;
    let order = await open();
    const model: string[] = [];
    const add = async (o: StreamOrder, p: number): Promise<void> => {
      const value = `r${model.length}`;
      await appendAsync(parts[p], { subject: "s", data: Buffer.from(value) });
      catchUp(o);
      model.push(value);
    };
    const N = 6 * 4096;
    for (let i = 0; i < N; i++) await add(order, i % 3);
    await order.flush();
    assert.equal(statSync(file).size, N * 32);

    // A clean close leaves page summaries: the next open reads the newest page's runs only.
    await order.close();
    assert.ok(existsSync(join(sub, ORDER_PAGES_FILE)));
    order = await open();
    assert.ok(inMemory(order) <= 2, "open reads the newest page and the head's only");
    assert.ok(!existsSync(join(sub, ORDER_PAGES_FILE)), "used once");
    for (const seq of [1, 4096, 12_345, N]) assert.equal((await order.view().get(seq))?.data.toString(), model[seq - 1]);

    // Every partition purged below stream sequence 20,000: 4 of 6 pages are dead, and the next flush rewrites the file without them.
    await order.view().purge({ upTo: 20_000 });
    await add(order, 1);
    await order.flush();
    assert.equal(order.compactions, 1);
    const live = N + 1 - 4 * 4096;
    assert.equal(statSync(file).size, (3 + live) * 32, "a base entry per partition and the live runs");
    const check = async (o: StreamOrder): Promise<void> => {
      const view = o.view();
      assert.equal(view.state().firstSeq, 20_000);
      assert.equal(view.state().lastSeq, model.length);
      for (const seq of [20_000, 20_481, N, model.length]) assert.equal((await view.get(seq))?.data.toString(), model[seq - 1], `seq ${seq}`);
      assert.equal(await view.get(19_999), null);
      assert.equal(await view.get(5), null, "a dropped run's sequence names nothing");
      const all = await view.scan(1, { maxMessages: 100_000 });
      assert.deepEqual(all.map((m) => m.seq), Array.from({ length: model.length - 19_999 }, (_, i) => 20_000 + i));
      assert.equal(view.pendingAfter(20_000), model.length - 20_000);
    };
    await check(order);
    // The compacted file reads back, through the summary and without it; new records keep numbering.
    await order.close();
    order = await open();
    await check(order);
    await add(order, 2);
    await order.flush();
    await order.close();
    rmSync(join(sub, ORDER_PAGES_FILE));
    order = await open();
    await check(order);

    // Everything dropped: compacted at open down to the base, and numbering goes on from it.
    await order.view().purge({});
    await order.close();
    rmSync(join(sub, ORDER_PAGES_FILE));
    order = await open();
    assert.ok(statSync(file).size < 4096 * 32, `${statSync(file).size} bytes left`);
    await add(order, 0);
    await order.flush();
    assert.equal(order.view().state().lastSeq, model.length);
    assert.equal((await order.view().get(model.length))?.data.toString(), model[model.length - 1]);
    await order.close();
    order = await open();
    assert.equal((await order.view().get(model.length))?.data.toString(), model[model.length - 1]);
    await order.close();
  });
  test("a partition that holds less than the order names (on a single node, a tail lost) keeps every record at the next open, moves on past the named sequences and reports them lost", async () => {
    const sub = mkdtempSync(join(dir, "short-"));
    const parts = [new MemoryLog(), new MemoryLog(), new MemoryLog()];
    const warnings: string[] = [];
    const open = (): Promise<StreamOrder> => StreamOrder.open(sub, parts, () => null, () => undefined, (err) => assert.fail(err.message), (w) => warnings.push(w));
    for (let i = 1; i <= 10; i++) await appendAsync(parts[0], { subject: "kr", data: Buffer.from(`v${i}`) });
    // The first open numbers 1..10 of partition 0, as a replica's open does before it knows what is replicated.
    let order = await open();
    await order.close();
    // Its tail 6..10 goes (written under sync interval, or damaged and cut as a torn tail at open).
    await parts[0].truncateFrom(6);
    order = await open();
    const st = parts[0].state();
    assert.equal(st.messages, 5, "the records it holds stay");
    assert.equal(st.firstSeq, 1);
    assert.equal(st.lastSeq, 10, "the sequences the order names are not handed out again");
    assert.deepEqual(
      st.lost.map((l) => [l.from, l.to]),
      [[6, 10]],
      "they were stored and are gone: reported lost, as stream info and /jsz show it",
    );
    assert.deepEqual(
      order.view().state().lost.map((l) => [l.from, l.to]),
      [[6, 10]],
    );
    assert.equal((await order.view().get(3))?.data.toString(), "v3");
    assert.equal(await order.view().get(7), null);
    assert.match(warnings.join("\n"), /partition 0 ends at 5, below the 10 the stream order names: 6..10 are lost/);
    const seq = await appendAsync(parts[0], { subject: "kr", data: Buffer.from("v11") });
    assert.equal(seq, 11);
    await order.close();
  });

  test("held (a clustered node): a replica cut back to its leader's log (KIP-101) below what the order names moves on past it, and nothing is reported lost (it fetches them again)", async () => {
    const sub = mkdtempSync(join(dir, "held-short-"));
    const parts = [new MemoryLog(), new MemoryLog()];
    for (let i = 1; i <= 10; i++) await appendAsync(parts[0], { subject: "kr", data: Buffer.from(`v${i}`) });
    const all: Visibility = { stableSeq: () => Infinity, hidden: () => false, hiddenIn: () => [] };
    const warnings: string[] = [];
    const open = (): Promise<StreamOrder> => StreamOrder.open(sub, parts, () => all, () => undefined, (err) => assert.fail(err.message), (w) => warnings.push(w), true);
    let order = await open();
    order.release();
    await new Promise((r) => setImmediate(r));
    await order.flush();
    assert.equal(order.view().state().lastSeq, 10);
    await order.close();
    // Its follower cuts 6..10 (never acknowledged), then the node restarts before it has fetched them again.
    await parts[0].truncateFrom(6);
    order = await open();
    assert.match(warnings.join("\n"), /partition 0 ends at 5, below the 10 the stream order names: it goes on at 11/);
    assert.equal(parts[0].state().lastSeq, 10, "the sequences the order names are not handed out again");
    assert.deepEqual(parts[0].state().lost, [], "not lost: its leader has them");
    await order.close();
  });

  test("held: an order opened before its partitions are capped names nothing new until released, then only what the caps show", async () => {
    const sub = mkdtempSync(join(dir, "held-"));
    const parts = [new MemoryLog(), new MemoryLog()];
    // Partition 0 stands for a follower: 1..5 acknowledged (its high watermark is 6), 6..10 an unacknowledged tail.
    for (let i = 0; i < 10; i++) await appendAsync(parts[0], { subject: "s", data: Buffer.from(`a${i}`) });
    for (let i = 0; i < 4; i++) await appendAsync(parts[1], { subject: "s", data: Buffer.from(`b${i}`) });
    let caps: number[] | null = null;
    const v = (): Visibility | null => (caps === null ? null : { stableSeq: (p) => caps![p], hidden: () => false, hiddenIn: () => [] });
    const errors: string[] = [];
    const open = (): Promise<StreamOrder> => StreamOrder.open(sub, parts, v, () => undefined, (err) => errors.push(err.message), () => undefined, true);
    let order = await open();
    assert.equal(order.view().state().lastSeq, 0, "nothing named while held");
    assert.ok(order.settle(), "a held order has nothing to wait for");
    assert.equal(order.view().state().lastSeq, 0);
    // The cluster settled the stream: partition 0 follows (capped at its high watermark), partition 1 is not replicated.
    caps = [5, Infinity];
    order.release();
    await new Promise((r) => setImmediate(r));
    await order.flush();
    assert.deepEqual((await order.view().scan(1, {})).map((m) => m.data.toString()), ["a0", "a1", "a2", "a3", "a4", "b0", "b1", "b2", "b3"]);
    // The follower cuts its unacknowledged tail to the new leader's log; a restart opens the order again.
    await parts[0].truncateFrom(6);
    await order.close();
    order = await open();
    assert.deepEqual([parts[0].state().firstSeq, parts[0].state().lastSeq, parts[0].state().messages], [1, 5, 5], "the follower's records are all there");
    assert.deepEqual(errors, []);
    await order.close();
  });
});
