/**
 * One sequence for a stream with several partitions: what JetStream readers
 * (consumers, MSG.GET, direct get, stream info) address. A stream with one
 * partition does not have one: its stream sequence is the partition's.
 *
 * Stream sequences are handed out as partitions' appends land, in one order
 * per stream, as runs: (stream first, partition, partition first, count). A
 * run is written to `order.map` (32 bytes, with its CRC) and made durable
 * in group commits (one fdatasync at a time covers every run written before
 * it); readers see only stream sequences whose run is durable, so a number a
 * consumer delivered or acknowledged means the same message after a crash.
 * Kafka's produce acknowledgement does not wait for it: the partition's own
 * sync is what makes a record safe, and a crash before its run is durable
 * only means the run is handed out again at the next start, to the same
 * records, before any reader can see them.
 *
 * A record gets its stream sequence only once readers may see it (the
 * door's stable sequence of the partition, visibility.ts): a Kafka
 * transaction left open in one partition holds back only its own records,
 * and the single order never has to reach back before a sequence a consumer
 * has passed. Hidden records (markers, aborted ones) keep their numbers and
 * are skipped as they are read.
 *
 * Memory does not grow with the runs: they sit in pages of 4,096 (128 KiB),
 * of which the newest and a few recently read stay in memory; the others
 * are read back from the file when needed. Per page, the position of every
 * partition where it starts (a sparse index: 8 bytes per partition per
 * 4,096 runs) lets `position` and `streamSeqOf` find their page by binary
 * search and walk one page.
 */

import { access, readFile, writeFile } from "node:fs/promises";
import { nodeFs, writeFully, type StoreFile } from "../util/fs.js";
import { crc32c } from "../util/crc32c.js";
import { parseStateFile, stateFileText } from "../util/persist.js";
import type { LogState, LostRange, MessageLog, PurgeOptions, ScanOptions, StoredMessage } from "../store/log.js";
import type { Visibility } from "./visibility.js";
import { appendCopy } from "./copy-batch.js";
import { EndMarkWriter, readEndMark, type EndMark } from "../store/end-mark.js";

export const ORDER_FILE = "order.map";

/**
 * The stream order was damaged or lost: numbering again would give stream
 * sequences that were acknowledged or delivered to other messages, so the
 * stream is not served (its files are left for a restore).
 */
export class OrderDamage extends Error {
  constructor(what: string) {
    super(`${what}: stream sequences already handed out cannot be told again, and are not handed out anew; restore the file or remove the stream`);
  }
}

async function exists(path: string): Promise<boolean> {
  try {
    await access(path);
    return true;
  } catch {
    return false;
  }
}
/** What a clean close leaves so that the next open need not read every run (a cache: checked against order.map). */
export const ORDER_PAGES_FILE = "order.pages";
/**
 * The order's end mark (store/end-mark.ts): the last stream sequence whose
 * run was durable. After a kill -9 no summary says how long order.map was:
 * cut at a run boundary, or removed, it would read as a shorter order, and
 * the records past the cut would be numbered again, perhaps in another
 * interleaving, under sequences consumers were given for other messages.
 */
export const ORDER_MARK_FILE = "order.mark";
const ENTRY = 32;
const PAGE = 4096;
/** Pages of runs kept in memory besides the newest. */
const CACHED_PAGES = 8;
/** After a failed write, how long before the order tries again (doubling, up to the most), as the partitions' logs reopen. */
const REOPEN_MIN_MS = 1000;
const REOPEN_MAX_MS = 30_000;
/** Stream sequences one merged read looks at before it stops to hand back what it found (or reads on, if nothing). */
const WINDOW_SEQS = 65_536;

interface Page {
  /** Stream sequence of the page's first run. */
  first: number;
  /** Runs in the page. */
  n: number;
  /** Per partition, the last partition sequence mapped before this page (absent: 0). */
  start: number[];
  /** 4 numbers per run (stream first, partition, partition first, count); null while only on disk. */
  runs: Float64Array | null;
  /** Index of the page (its runs start at entry index × PAGE). */
  index: number;
}

function writeU64(b: Buffer, at: number, v: number): void {
  b.writeUInt32LE(v % 0x1_0000_0000, at);
  b.writeUInt32LE(Math.floor(v / 0x1_0000_0000), at + 4);
}

function readU64(b: Buffer, at: number): number {
  return b.readUInt32LE(at) + b.readUInt32LE(at + 4) * 0x1_0000_0000;
}

/** An append waiting for its stream sequence (whenNumbered). */
interface NumberWaiter {
  pseq: number;
  done: (err: Error | null, streamSeq: number) => void;
}

export class StreamOrder {
  private readonly pages: Page[] = [];
  private readonly cached: Page[] = [];
  /** Next stream sequence to hand out. */
  private nextSeq = 1;
  /** Stream sequences below this are in durable runs: all readers may see. */
  durableNext = 1;
  /** Per partition: the last partition sequence mapped, and the last one in a durable run. */
  private readonly high: number[] = [];
  private readonly durableHigh: number[] = [];
  private entries = 0;
  private durableEntries = 0;
  /** Encoded runs not yet written. */
  private pendingBytes: Buffer[] = [];
  private writing = false;
  private failed: Error | null = null;
  private catchUpQueued = false;
  private closed = false;
  /** The page that holds the first stream sequence still stored (readers' start), moved on as partitions drop messages. */
  private headPage = 0;
  private headRun = 0;
  private idleWaiters: Array<() => void> = [];
  /** Per partition, the appends waiting for their stream sequence to be durable (a JetStream PubAck), in partition order. */
  private readonly numberWaiters: Array<Array<NumberWaiter>> = [];
  private waiting = 0;
  /** Opened `held`, not yet released: nothing new gets a run. */
  private held = false;
  /** A failed write's next try (reopen), and how many tries failed in a row. */
  private reopenTimer: NodeJS.Timeout | null = null;
  private reopenAttempts = 0;
  private warn: (text: string) => void = () => undefined;

  /**
   * Entries at the start of order.map before its first run: the base a
   * compaction wrote (one per partition, count 0: the partition's last
   * sequence mapped by the dropped runs, and the stream sequence after them).
   */
  private fileBase = 0;

  private constructor(
    private readonly partitions: MessageLog[],
    private file: StoreFile | null,
    private readonly path: string | null,
    /** The door's rules, if any: runs are made only of what readers may see. */
    private readonly visibility: () => Visibility | null,
    /** Told when more stream sequences became durable (readers may read on). */
    private readonly onDurable: () => void,
    private readonly onError: (err: Error) => void,
  ) {}

  /**
   * Opens (or creates) the order of a stream's partitions. `dir` null: in
   * memory (a memory stream). A new order begins with partition 0's
   * messages at their own sequences, so a stream grown from one partition
   * keeps every sequence readers already know.
   *
   * `held`: nothing new gets a run until `release()`. A clustered node opens
   * its streams before it knows which partitions are replicated here and
   * has capped them at their high watermarks (stream-replicas.ts): a run
   * made then could name a follower's unacknowledged tail, which its
   * truncation to the leader's log (KIP-101) takes away again.
   */
  static async open(
    dir: string | null,
    partitions: MessageLog[],
    visibility: () => Visibility | null,
    onDurable: () => void,
    onError: (err: Error) => void,
    warn: (text: string) => void = () => undefined,
    held = false,
  ): Promise<StreamOrder> {
    let file: StoreFile | null = null;
    let existed = false;
    const path = dir === null ? null : `${dir}/${ORDER_FILE}`;
    const markPath = `${dir}/${ORDER_MARK_FILE}`;
    // Read once: checked against the order below, and whether it is there decides how the writer first writes it.
    const mark = path === null ? null : await readEndMark(nodeFs, markPath);
    if (path !== null) {
      try {
        file = await nodeFs.open(path, "existing");
        existed = true;
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code !== "ENOENT") throw err;
        // On a single node a new order starts before any partition but the first holds a message (a stream grown from one
        // keeps its sequences): partitions past it with messages, or a clean close's summary, mean the map was lost. (A
        // clustered node, which opens held, may be given partitions' records before it makes its order.)
        const holding = held ? -1 : partitions.findIndex((p, i) => i > 0 && p.state().lastSeq > 0);
        if (holding > 0) throw new OrderDamage(`${ORDER_FILE} is gone while partition ${holding} holds messages`);
        if (await exists(`${dir}/${ORDER_PAGES_FILE}`)) throw new OrderDamage(`${ORDER_FILE} is gone while ${ORDER_PAGES_FILE} says a clean close left it`);
        if (mark !== null && typeof mark !== "string" && mark.lastSeq > 0) throw new OrderDamage(`${ORDER_FILE} is gone while ${ORDER_MARK_FILE} says stream sequences up to ${mark.lastSeq} were handed out`);
        file = await nodeFs.open(path, "create");
        await nodeFs.syncDir(dir!);
      }
    }
    const order = new StreamOrder(partitions, file, path, visibility, onDurable, onError);
    order.held = held;
    order.warn = warn;
    try {
      if (existed && !(await order.loadSummary())) await order.load();
      if (existed && mark !== null) order.checkMark(markPath, mark);
      if (path !== null) {
        // A mark's first write that a crash interrupted (end-mark.ts makes it under this name).
        await nodeFs.remove(`${markPath}.tmp`);
        order.mark = new EndMarkWriter(nodeFs, markPath, mark !== null, warn);
      }
      if (existed) await order.checkPartitions(warn, held);
      // A file that only holds a base (every run compacted away) is not a new order. Held, the release's catch-up makes the
      // same first run (partition 0 comes first, from its sequence 1).
      if (order.entries === 0 && order.fileBase === 0 && !held) {
        // Partition 0 keeps its sequences: they are the stream's as long as it had one partition.
        const last = Math.min(partitions[0].state().lastSeq, visibility()?.stableSeq(0) ?? Infinity);
        if (last > 0) order.addRun(0, 1, last);
        await order.flush();
      }
      order.catchUp();
      await order.flush();
      // Reads the first stored message's page back (damage there stops the open).
      if (order.compactDue()) await order.compact();
      if (order.failed instanceof OrderDamage) throw order.failed;
    } catch (err) {
      await file?.close().catch(() => undefined);
      throw err;
    }
    return order;
  }

  /**
   * Reads the runs back a page at a time (older pages leave memory as the
   * read goes on); a torn last run (a crash mid-write) is cut off.
   */
  private async load(): Promise<void> {
    const file = this.file!;
    const size = await file.size();
    const buf = Buffer.allocUnsafe(PAGE * ENTRY);
    let pos = 0;
    let torn = false;
    while (pos < size && !torn) {
      const want = Math.min(buf.length, size - pos);
      let got = 0;
      while (got < want) {
        const r = await file.read(buf, got, want - got, pos + got);
        if (r <= 0) break;
        got += r;
      }
      const n = Math.floor(got / ENTRY);
      let i = 0;
      for (; i < n; i++) {
        const at = i * ENTRY;
        if (crc32c(buf, at, at + 24) !== buf.readUInt32LE(at + 24)) {
          // Zeros are what a power loss leaves of a page of runs not yet synced while a later one was (never acknowledged):
          // a torn tail, as before. Other bytes with intact runs after them are damage.
          const hole = buf.subarray(at, at + ENTRY).every((b) => b === 0);
          if (!hole && (await this.validEntryAfter(pos + at + ENTRY, size))) throw new OrderDamage(`${ORDER_FILE} is damaged at byte ${pos + at}, with intact runs after it`);
          break;
        }
        const count = buf.readUInt32LE(at + 20);
        if (count === 0) {
          // A base entry: only before the first run.
          if (this.entries > 0) break;
          this.setBase(readU64(buf, at), buf.readUInt32LE(at + 16), readU64(buf, at + 8));
          this.fileBase++;
          continue;
        }
        this.pushRun(readU64(buf, at), buf.readUInt32LE(at + 16), readU64(buf, at + 8), count);
      }
      this.durableEntries = this.entries;
      pos += i * ENTRY;
      torn = i < n || got < want || n * ENTRY !== got;
    }
    if (pos !== size) {
      await file.truncate(pos);
      await file.datasync();
    }
    this.durableNext = this.nextSeq;
    for (let p = 0; p < this.high.length; p++) this.durableHigh[p] = this.high[p];
    for (const page of this.pages) if (page !== this.pages[this.pages.length - 1]) page.runs = null;
  }

  /** Whether an entry with a valid checksum lies between `from` and `size`: what separates damage from a torn tail. */
  private async validEntryAfter(from: number, size: number): Promise<boolean> {
    const buf = Buffer.allocUnsafe(PAGE * ENTRY);
    for (let pos = from; pos + ENTRY <= size; pos += buf.length) {
      const got = await this.file!.read(buf, 0, Math.min(buf.length, size - pos), pos);
      for (let at = 0; at + ENTRY <= got; at += ENTRY) if (crc32c(buf, at, at + 24) === buf.readUInt32LE(at + 24)) return true;
      if (got <= 0) break;
    }
    return false;
  }

  /** Keeps order.mark current as runs become durable; null for an order in memory. */
  private mark: EndMarkWriter | null = null;

  /** Refuses an order that ends before the stream sequences its mark says were durable (see ORDER_MARK_FILE). */
  private checkMark(path: string, m: EndMark | string): void {
    if (typeof m === "string") {
      this.warn(`${path} is unreadable (${m}): whether ${ORDER_FILE} lost its end cannot be told`);
      return;
    }
    if (this.nextSeq - 1 < m.lastSeq) {
      throw new OrderDamage(`${ORDER_FILE} ends at stream sequence ${this.nextSeq - 1} where ${ORDER_MARK_FILE} says ${m.lastSeq} were durable`);
    }
  }

  private setBase(nextSeq: number, partition: number, high: number): void {
    this.nextSeq = nextSeq;
    while (this.high.length <= partition) this.high.push(0);
    this.high[partition] = high;
  }

  /**
   * A partition that holds less than the runs name lost its tail (a sync
   * policy other than always, damage cut as a torn tail), or, a replica, was
   * cut back to its leader's log (KIP-101). Nothing it holds goes. Its
   * appends must not take the sequences the runs name again, so it moves on
   * past them; a replica's reconciliation finds the hole against its
   * leader's log and fetches it again (replication.ts). On a single node
   * (not `held`: a clustered node opens its orders held) nothing fetches
   * them: they were stored (a run names only what a partition landed) and
   * are gone, so they are recorded lost in the partition (its state's
   * `lost`, lost.json), as a tail cut below what a consumer was given is
   * (jetstream.ts, goOnPastDelivered), before it moves on.
   */
  private async checkPartitions(warn: (text: string) => void, held: boolean): Promise<void> {
    for (let p = 0; p < this.partitions.length; p++) {
      const h = this.high[p] ?? 0;
      const last = this.partitions[p].state().lastSeq;
      if (last >= h) continue;
      warn(`partition ${p} ends at ${last}, below the ${h} the stream order names: ${held ? "" : `${last + 1}..${h} are lost; `}it goes on at ${h + 1}`);
      if (!held) await this.partitions[p].noteLost(last + 1, h);
      await appendCopy(this.partitions[p], h + 1, 0, []);
    }
  }

  private pushRun(streamFirst: number, partition: number, partFirst: number, count: number): void {
    let page = this.pages[this.pages.length - 1];
    if (page === undefined || page.n === PAGE) {
      if (page !== undefined) this.cache(page);
      page = { first: streamFirst, n: 0, start: this.high.slice(), runs: new Float64Array(PAGE * 4), index: this.pages.length };
      this.pages.push(page);
    }
    const r = page.runs!;
    const at = page.n * 4;
    r[at] = streamFirst;
    r[at + 1] = partition;
    r[at + 2] = partFirst;
    r[at + 3] = count;
    page.n++;
    this.entries++;
    while (this.high.length <= partition) this.high.push(0);
    this.high[partition] = partFirst + count - 1;
    this.nextSeq = streamFirst + count;
  }

  private addRun(partition: number, partFirst: number, count: number): void {
    this.pendingBytes.push(encodeRun(this.nextSeq, partition, partFirst, count));
    this.pushRun(this.nextSeq, partition, partFirst, count);
  }

  /** Partitions stored more (or readers may see more): runs for it are made on the next turn. */
  landed(): void {
    if (this.catchUpQueued || this.closed) return;
    this.catchUpQueued = true;
    setImmediate(() => {
      this.catchUpQueued = false;
      this.catchUp();
      void this.flush();
    });
  }

  /** Whether it was opened `held` and not released yet. */
  get isHeld(): boolean {
    return this.held;
  }

  /** Ends the hold of an order opened `held` (its partitions' caps are in place): what they show gets runs now. */
  release(): void {
    if (!this.held) return;
    this.held = false;
    this.landed();
  }

  /** Hands out stream sequences to what every partition stored and readers may see, partition by partition. */
  private catchUp(): void {
    if (this.failed !== null || this.closed || this.held) return;
    const v = this.visibility();
    for (let p = 0; p < this.partitions.length; p++) {
      const last = Math.min(this.partitions[p].state().lastSeq, v?.stableSeq(p) ?? Infinity);
      const from = (this.high[p] ?? 0) + 1;
      // Runs are at most 2^32 - 1 long (their count is a u32).
      for (let at = from; at <= last; at += 0xffff_ffff) this.addRun(p, at, Math.min(0xffff_ffff, last - at + 1));
    }
  }

  /** Writes and syncs what was handed out; resolves once it is durable (or failed). */
  flush(): Promise<void> {
    if (this.pendingBytes.length === 0 && !this.writing) return Promise.resolve();
    const done = new Promise<void>((resolve) => this.idleWaiters.push(resolve));
    if (!this.writing) void this.writeLoop();
    return done;
  }

  private async writeLoop(): Promise<void> {
    this.writing = true;
    try {
      while (this.pendingBytes.length > 0 && this.failed === null) {
        if (this.compactDue()) await this.compact();
        const bufs = this.pendingBytes;
        this.pendingBytes = [];
        const entries = this.durableEntries + bufs.length;
        const next = this.nextAt(entries);
        const high = this.highAt(entries);
        if (this.file !== null) {
          const bytes = bufs.length === 1 ? bufs[0] : Buffer.concat(bufs);
          try {
            await writeFully(this.file, bytes, (this.fileBase + this.durableEntries) * ENTRY);
            await this.file.datasync();
            // Removed while open (rm of the stream's directory or of the file): written and synced without error, gone at the
            // next start, and with it every stream sequence handed out. Damage, not a passing failure: no reopen over it.
            if (this.file.linked?.() === false) {
              this.damaged(`${this.path} was removed while open`);
              break;
            }
          } catch (err) {
            // Sticky, as the store's, until the reopen (scheduleReopen): no sync is retried over what the failed one covered, the
            // file is cut back to its durable runs first; readers stop at what is durable.
            this.failed = err as Error;
            this.onError(new Error(`${this.path}: ${(err as Error).message}; the stream's order takes no more runs until it is reopened`));
            this.failWaiters(this.failed);
            this.scheduleReopen();
            break;
          }
        } else {
          await Promise.resolve();
        }
        const from = this.durableEntries;
        this.durableEntries = entries;
        this.durableNext = next;
        this.mark?.note(1, (this.fileBase + entries) * ENTRY, next - 1);
        for (let p = 0; p < high.length; p++) this.durableHigh[p] = high[p];
        if (this.waiting > 0) this.numbered(from, entries);
        this.onDurable();
      }
    } finally {
      this.writing = false;
      for (const w of this.idleWaiters.splice(0)) w();
    }
  }

  /**
   * Calls `done` with the stream sequence of `partition`'s sequence `pseq`
   * once the run holding it is durable: what a JetStream PubAck may name
   * (a crash cannot give that number to another record). At once if it
   * is already; an error if the order fails or closes first.
   */
  whenNumbered(partition: number, pseq: number, done: (err: Error | null, streamSeq: number) => void): void {
    if (pseq <= (this.durableHigh[partition] ?? 0)) return done(null, this.streamSeqOf(partition, pseq));
    if (this.failed !== null) return done(this.failed, 0);
    if (this.closed) return done(new Error("the stream is closed"), 0);
    while (this.numberWaiters.length <= partition) this.numberWaiters.push([]);
    const q = this.numberWaiters[partition];
    q.push({ pseq, done });
    // Appends of a partition land in order, so this is rare: keep the queue sorted anyway.
    if (q.length > 1 && q[q.length - 2].pseq > pseq) q.sort((a, b) => a.pseq - b.pseq);
    this.waiting++;
    this.landed();
  }

  /** Runs `from`..`to` - 1 became durable: tells the appends they hold their stream sequences. */
  private numbered(from: number, to: number): void {
    for (let i = from; i < to && this.waiting > 0; ) {
      const page = this.pages[Math.floor(i / PAGE)];
      const runs = this.runsOf(page);
      const end = Math.min(to - page.index * PAGE, page.n);
      for (let j = i - page.index * PAGE; j < end; j++) {
        const q = this.numberWaiters[runs[j * 4 + 1]];
        if (q === undefined || q.length === 0) continue;
        const first = runs[j * 4 + 2];
        const last = first + runs[j * 4 + 3] - 1;
        let k = 0;
        // A waiter below the run was in an earlier one (registered while its run was being written).
        for (; k < q.length && q[k].pseq <= last; k++) {
          const w = q[k];
          w.done(null, w.pseq >= first ? runs[j * 4] + (w.pseq - first) : this.streamSeqOf(runs[j * 4 + 1], w.pseq));
        }
        if (k > 0) {
          q.splice(0, k);
          this.waiting -= k;
        }
      }
      i = page.index * PAGE + end;
    }
  }

  /**
   * A failed write is tried again later, as the partitions' logs reopen
   * (file-log.ts): without it, one failed write (a disk full for a moment)
   * refused every publish to the stream, and hid every message stored
   * since from its readers, until the server restarted.
   */
  private scheduleReopen(): void {
    if (this.closed || this.file === null || this.reopenTimer !== null || this.failed === null || this.failed instanceof OrderDamage) return;
    const delay = Math.min(REOPEN_MAX_MS, REOPEN_MIN_MS * 2 ** Math.min(this.reopenAttempts, 5));
    this.reopenTimer = setTimeout(() => {
      this.reopenTimer = null;
      void this.reopen();
    }, delay);
    this.reopenTimer.unref();
  }

  /**
   * Cuts the file back to its durable runs (what was written after the last
   * sync may not be on disk) and writes the runs handed out since again, from
   * memory (pages not durable are never dropped from it); the order takes
   * runs again once they are durable.
   */
  private async reopen(): Promise<void> {
    if (this.closed || this.file === null || this.failed === null || this.failed instanceof OrderDamage) return;
    if (this.writing) return this.scheduleReopen();
    this.reopenAttempts++;
    const cause = this.failed;
    try {
      await this.file.truncate((this.fileBase + this.durableEntries) * ENTRY);
      await this.file.datasync();
    } catch (err) {
      this.onError(new Error(`${this.path}: reopening the stream's order failed: ${(err as Error).message}`));
      return this.scheduleReopen();
    }
    if (this.closed || this.failed !== cause) return;
    const bufs: Buffer[] = [];
    for (let i = this.durableEntries; i < this.entries; i++) {
      const r = this.run(i);
      bufs.push(encodeRun(r[0], r[1], r[2], r[3]));
    }
    this.pendingBytes = bufs;
    this.failed = null;
    await this.flush();
    if (this.failed !== null) return; // failed again: the next try is scheduled
    this.reopenAttempts = 0;
    this.warn(`${this.path}: the stream's order takes runs again after the storage failure`);
    this.landed();
  }

  /** Why the order stopped (a failed write, a run damaged on disk), or null: the stream reports it as its storage error. */
  get failure(): Error | null {
    return this.failed;
  }

  /** Damage found while running: sticky (no more runs, waiting publishes failed), reported once; the error to throw. */
  private damaged(what: string): OrderDamage {
    const err = new OrderDamage(what);
    if (this.failed === null) {
      this.failed = err;
      this.onError(err);
      this.failWaiters(err);
    }
    return err;
  }

  private failWaiters(err: Error): void {
    for (const q of this.numberWaiters) for (const w of q.splice(0)) w.done(err, 0);
    this.waiting = 0;
  }

  /**
   * Hands out stream sequences to everything stored and visible, and says
   * whether all of them are durable (what an expectation header compares
   * with must be a number readers may see). If not, a flush is under way:
   * `onDurable` follows.
   */
  settle(): boolean {
    // A failed order takes no more runs: nothing to wait for (the publish fails at whenNumbered).
    if (this.failed !== null) return true;
    this.catchUp();
    if (this.pendingBytes.length === 0 && !this.writing) return true;
    void this.flush();
    return false;
  }

  /** The next stream sequence after the first `entries` runs. */
  private nextAt(entries: number): number {
    if (entries === 0) return this.pages.length > 0 ? this.pages[0].first : this.nextSeq;
    const r = this.run(entries - 1);
    return r[0] + r[3];
  }

  /** Per partition, the last sequence mapped by the first `entries` runs. */
  private highAt(entries: number): number[] {
    if (entries === this.entries) return this.high.slice();
    const page = this.pages[Math.floor((entries - 1) / PAGE)];
    const out = page.start.slice();
    const runs = this.runsOf(page);
    const n = entries - page.index * PAGE;
    for (let i = 0; i < n; i++) {
      const p = runs[i * 4 + 1];
      while (out.length <= p) out.push(0);
      out[p] = runs[i * 4 + 2] + runs[i * 4 + 3] - 1;
    }
    return out;
  }

  // ---- pages ----

  private cache(page: Page): void {
    const i = this.cached.indexOf(page);
    if (i >= 0) this.cached.splice(i, 1);
    this.cached.push(page);
    while (this.cached.length > CACHED_PAGES) {
      const old = this.cached.shift()!;
      if (old !== this.pages[this.pages.length - 1] && this.path !== null && (old.index + 1) * PAGE <= this.durableEntries) old.runs = null;
    }
  }

  private runsOf(page: Page): Float64Array {
    if (page.runs !== null) {
      if (page !== this.pages[this.pages.length - 1]) this.cache(page);
      return page.runs;
    }
    const from = (this.fileBase + page.index * PAGE) * ENTRY;
    const bytes = nodeFs.readSync(this.path!, from, page.n * ENTRY);
    if (bytes === null) throw new Error(`${this.path}: shorter than the runs it held`);
    const runs = new Float64Array(page.n * 4);
    for (let i = 0; i < page.n; i++) {
      const at = i * ENTRY;
      // Read back as written, or not at all: a run changed on disk would give a stream sequence another message.
      if (crc32c(bytes, at, at + 24) !== bytes.readUInt32LE(at + 24)) throw this.damaged(`${ORDER_FILE} is damaged at byte ${from + at}, read back`);
      runs[i * 4] = readU64(bytes, at);
      runs[i * 4 + 1] = bytes.readUInt32LE(at + 16);
      runs[i * 4 + 2] = readU64(bytes, at + 8);
      runs[i * 4 + 3] = bytes.readUInt32LE(at + 20);
    }
    page.runs = runs;
    this.cache(page);
    return runs;
  }

  /** Run `i` as [stream first, partition, partition first, count]. */
  private run(i: number): Float64Array {
    const page = this.pages[Math.floor(i / PAGE)];
    const at = (i - page.index * PAGE) * 4;
    return this.runsOf(page).subarray(at, at + 4);
  }

  /** The index of the durable run holding stream sequence `seq`, or -1. */
  private runAt(seq: number): number {
    if (seq < 1 || seq >= this.durableNext || this.pages.length === 0 || seq < this.pages[0].first) return -1;
    let lo = 0;
    let hi = this.pages.length - 1;
    while (lo < hi) {
      const mid = (lo + hi + 1) >>> 1;
      if (this.pages[mid].first <= seq) lo = mid;
      else hi = mid - 1;
    }
    const page = this.pages[lo];
    const runs = this.runsOf(page);
    let a = 0;
    let b = page.n - 1;
    while (a < b) {
      const mid = (a + b + 1) >>> 1;
      if (runs[mid * 4] <= seq) a = mid;
      else b = mid - 1;
    }
    return page.index * PAGE + a;
  }

  /** Where stream sequence `seq` is stored: [partition, partition sequence], or null. */
  locate(seq: number): [number, number] | null {
    const i = this.runAt(seq);
    if (i < 0) return null;
    const r = this.run(i);
    return [r[1], r[2] + (seq - r[0])];
  }

  /** The last sequence of `partition` whose stream sequence is at most `seq` (0: none). */
  position(partition: number, seq: number): number {
    if (seq >= this.durableNext - 1) return this.durableHigh[partition] ?? 0;
    const i = this.runAt(seq);
    if (i < 0) return 0;
    const page = this.pages[Math.floor(i / PAGE)];
    let pos = page.start[partition] ?? 0;
    const runs = this.runsOf(page);
    for (let j = 0; j <= i - page.index * PAGE; j++) {
      if (runs[j * 4 + 1] !== partition) continue;
      pos = Math.min(runs[j * 4 + 2] + runs[j * 4 + 3] - 1, runs[j * 4 + 2] + (seq - runs[j * 4]));
    }
    return pos;
  }

  /** The stream sequence of `partition`'s sequence `pseq`, or of the next one mapped after it; 0 if none is (yet). */
  streamSeqOf(partition: number, pseq: number): number {
    if (pseq > (this.durableHigh[partition] ?? 0)) return 0;
    // The last page that starts before pseq holds it (or the run after it).
    let lo = 0;
    let hi = this.pages.length - 1;
    while (lo < hi) {
      const mid = (lo + hi + 1) >>> 1;
      if ((this.pages[mid].start[partition] ?? 0) < pseq) lo = mid;
      else hi = mid - 1;
    }
    for (let pi = lo; pi < this.pages.length; pi++) {
      const page = this.pages[pi];
      const runs = this.runsOf(page);
      const n = Math.min(page.n, this.durableEntries - page.index * PAGE);
      for (let j = 0; j < n; j++) {
        if (runs[j * 4 + 1] !== partition) continue;
        const first = runs[j * 4 + 2];
        const last = first + runs[j * 4 + 3] - 1;
        if (last < pseq) continue;
        return runs[j * 4] + Math.max(0, pseq - first);
      }
    }
    return 0;
  }

  /** The first stream sequence whose message is still stored (moving the head past runs every partition dropped). */
  firstSeq(): number {
    const total = this.durableEntries;
    // Whole pages first, by their partitions' starts, without reading their runs.
    while (this.headRun === 0 && (this.headPage + 1) * PAGE < total && this.pageDropped(this.headPage)) this.headPage++;
    while (this.headPage * PAGE + this.headRun < total) {
      const r = this.run(this.headPage * PAGE + this.headRun);
      const first = this.partitions[r[1]].state().firstSeq;
      const last = r[2] + r[3] - 1;
      if (first <= last) return r[0] + Math.max(0, first - r[2]);
      if (++this.headRun === PAGE) {
        this.headRun = 0;
        this.headPage++;
      }
    }
    return this.durableNext;
  }

  /**
   * The stream sequences from the first still stored to the last durable
   * whose record is gone (below its partition's first sequence, or deleted
   * inside it), ascending, at most `max`: stream info's deleted_details.
   * Walks the runs from the head (pages read back as needed), asking each
   * partition for its own gaps once.
   */
  deletedSequences(max: number): number[] {
    const out: number[] = [];
    const first = this.firstSeq();
    const start = this.runAt(first);
    if (start < 0) return out;
    const gaps = this.partitions.map((log) => log.deletedSequences(max));
    const at = this.partitions.map(() => 0);
    const firsts = this.partitions.map((log) => log.state().firstSeq);
    for (let i = start; i < this.durableEntries && out.length < max; ) {
      const page = this.pages[Math.floor(i / PAGE)];
      const runs = this.runsOf(page);
      const end = Math.min(this.durableEntries - page.index * PAGE, page.n);
      for (let j = i - page.index * PAGE; j < end && out.length < max; j++) {
        const s0 = runs[j * 4];
        const p = runs[j * 4 + 1];
        const a = runs[j * 4 + 2];
        const b = a + runs[j * 4 + 3] - 1;
        const lo = Math.max(a, a + (first - s0));
        for (let q = lo; q <= Math.min(b, firsts[p] - 1) && out.length < max; q++) out.push(s0 + (q - a));
        const g = gaps[p];
        let k = at[p];
        while (k < g.length && g[k] < lo) k++;
        for (; k < g.length && g[k] <= b && out.length < max; k++) out.push(s0 + (g[k] - a));
        at[p] = k;
      }
      i = page.index * PAGE + end;
    }
    return out;
  }

  /** Whether every partition dropped everything page `k` maps (the next page's starts are below their first sequences). */
  private pageDropped(k: number): boolean {
    const next = this.pages[k + 1].start;
    for (let p = 0; p < next.length; p++) if ((next[p] ?? 0) >= this.partitions[p].state().firstSeq) return false;
    return true;
  }

  // ---- compaction ----

  /**
   * Whether enough of order.map is dead (whole pages of runs before the
   * head, which every partition has dropped) to rewrite it: at least one
   * page, and at least as many as stay, so a rewrite copies no more than it
   * drops (its cost is paid for by the runs it removes).
   */
  private compactDue(): boolean {
    if (this.file === null || this.failed !== null || this.closed) return false;
    try {
      this.firstSeq();
    } catch {
      // The first page is damaged (damaged() made it the order's failure, reported): the write loop stops on it, and an
      // open throws it. Never thrown from the write loop, where nothing would catch it.
      return false;
    }
    const dead = this.headPage;
    return dead >= 1 && dead * PAGE >= this.durableEntries - dead * PAGE;
  }

  /**
   * Rewrites order.map without the dead pages: a base (per partition its
   * last sequence mapped before the first kept run, and that run's stream
   * sequence), then the durable runs kept, synced, renamed over the old file
   * and the directory synced (a crash leaves one file or the other, both
   * complete). Runs not yet written stay pending and go to the new file.
   */
  private async compact(): Promise<void> {
    const keepFrom = this.headPage;
    const base = keepFrom < this.pages.length ? { next: this.pages[keepFrom].first, high: this.pages[keepFrom].start } : { next: this.durableNext, high: this.durableHigh };
    const dir = this.path!.slice(0, this.path!.lastIndexOf("/"));
    const tmp = `${this.path}.tmp`;
    const out = await nodeFs.open(tmp, "replace");
    try {
      const head = Buffer.alloc(ENTRY * Math.max(1, base.high.length));
      const parts = Math.max(1, base.high.length);
      for (let p = 0; p < parts; p++) {
        const at = p * ENTRY;
        writeU64(head, at, base.next);
        writeU64(head, at + 8, base.high[p] ?? 0);
        head.writeUInt32LE(p, at + 16);
        head.writeUInt32LE(0, at + 20);
        head.writeUInt32LE(crc32c(head, at, at + 24), at + 24);
      }
      await writeFully(out, head, 0);
      // The kept runs, copied as they are, 1 MiB at a time.
      const chunk = Buffer.allocUnsafe(32_768 * ENTRY);
      let from = (this.fileBase + keepFrom * PAGE) * ENTRY;
      const end = (this.fileBase + this.durableEntries) * ENTRY;
      let to = head.length;
      while (from < end) {
        const want = Math.min(chunk.length, end - from);
        const got = await this.file!.read(chunk, 0, want, from);
        if (got <= 0) throw new Error(`${this.path}: shorter than the runs it held`);
        await writeFully(out, chunk.subarray(0, got), to);
        from += got;
        to += got;
      }
      await out.datasync();
    } catch (err) {
      await out.close().catch(() => undefined);
      await nodeFs.remove(tmp).catch(() => undefined);
      // Not a storage failure of the order: the old file is intact and stays in use.
      this.onError(new Error(`${this.path}: compaction failed, the file keeps its dead runs: ${(err as Error).message}`));
      return;
    }
    await nodeFs.rename(tmp, this.path!);
    // No await from the rename to here: a page read by path must find the offsets of the file it names.
    const old = this.file!;
    this.file = out; // the handle follows its file to the new name
    this.fileBase = Math.max(1, base.high.length);
    // Entries are counted from the first kept run now.
    const dropped = keepFrom * PAGE;
    this.pages.splice(0, keepFrom);
    for (const page of this.pages) page.index -= keepFrom;
    this.entries -= dropped;
    this.durableEntries -= dropped;
    this.headPage = 0;
    this.compactions++;
    await old.close();
    // Before any run goes to the new file: a crash must not bring back the old one without it.
    await nodeFs.syncDir(dir);
  }

  /** Rewrites of order.map so far (for tests and monitoring). */
  compactions = 0;

  // ---- the page summary a clean close leaves ----

  /**
   * Writes what open needs besides the newest page (per page its first
   * stream sequence, run count and partitions' starts; the base), checked
   * at the next open against order.map's size and last run. Without a sync:
   * a cache, ignored unless it matches.
   */
  private async saveSummary(): Promise<void> {
    if (this.path === null || this.failed !== null || this.file === null) return;
    const size = await this.file.size();
    if (size !== (this.fileBase + this.durableEntries) * ENTRY || this.durableEntries === 0) return;
    const last = Buffer.allocUnsafe(ENTRY);
    if ((await this.file.read(last, 0, ENTRY, size - ENTRY)) !== ENTRY) return;
    const summary = {
      size,
      last: last.toString("base64"),
      fileBase: this.fileBase,
      pages: this.pages.map((p) => [p.first, p.n, p.start]),
      high: this.durableHigh,
      next: this.durableNext,
    };
    // Checksummed: pages taken from it are read back without a look at every run.
    await writeFile(`${this.path.slice(0, -ORDER_FILE.length)}${ORDER_PAGES_FILE}`, stateFileText(summary));
  }

  /** Restores the pages from a clean close's summary (reading only the newest page's runs); false if there is none that matches. */
  private async loadSummary(): Promise<boolean> {
    const at = `${this.path!.slice(0, -ORDER_FILE.length)}${ORDER_PAGES_FILE}`;
    let summary: { size: number; last: string; fileBase: number; pages: Array<[number, number, number[]]>; high: number[]; next: number };
    try {
      summary = parseStateFile(await readFile(at, "utf8")) as typeof summary;
    } catch {
      // None, or damaged: every run is read back and checked instead (and the summary removed below, if there).
      if (await exists(at)) await nodeFs.remove(at);
      return false;
    }
    const file = this.file!;
    const size = await file.size();
    // Nothing is appended between a clean close and the next open: a shorter file lost runs (kept for the next look).
    if (typeof summary.size === "number" && summary.size > size) throw new OrderDamage(`${ORDER_FILE} holds ${size} bytes where its clean close left ${summary.size}`);
    const last = Buffer.allocUnsafe(ENTRY);
    const lastRead = size >= ENTRY && (await file.read(last, 0, ENTRY, size - ENTRY)) === ENTRY;
    // The size its clean close left, but another last run: the bytes changed since (zeroed, overwritten), which a load
    // would cut as a torn tail and number again (kept for the next look).
    if (lastRead && summary.size === size && typeof summary.last === "string" && last.toString("base64") !== summary.last) {
      throw new OrderDamage(`${ORDER_FILE}'s last run is not the one its clean close left`);
    }
    // Used once: appends after this open make it stale.
    await nodeFs.remove(at);
    if (summary.size !== size || !lastRead || !Array.isArray(summary.pages) || summary.pages.length === 0) return false;
    this.fileBase = summary.fileBase;
    let entries = 0;
    for (const [first, n, start] of summary.pages) {
      this.pages.push({ first, n, start, runs: null, index: this.pages.length });
      entries += n;
    }
    if ((this.fileBase + entries) * ENTRY !== size) {
      this.pages.length = 0;
      this.fileBase = 0;
      return false;
    }
    this.entries = this.durableEntries = entries;
    this.nextSeq = this.durableNext = summary.next;
    for (let p = 0; p < summary.high.length; p++) this.high[p] = this.durableHigh[p] = summary.high[p];
    // The newest page takes appends: in memory, with room for a full page.
    const newest = this.pages[this.pages.length - 1];
    const runs = this.runsOf(newest);
    newest.runs = new Float64Array(PAGE * 4);
    newest.runs.set(runs);
    return true;
  }

  /**
   * Messages from stream sequence `from` on, in stream order, as a
   * partition's scan: each partition read once per window of runs, the
   * messages renumbered with their stream sequences, hidden ones skipped.
   */
  async scan(from: number, opts: ScanOptions = {}): Promise<StoredMessage[]> {
    const max = opts.maxMessages ?? 256;
    const maxBytes = opts.maxBytes ?? Infinity;
    const v = this.visibility();
    from = Math.max(from, this.firstSeq());
    while (from < this.durableNext) {
      const first = this.runAt(from);
      const windowEnd = Math.min(this.durableNext, from + WINDOW_SEQS);
      // Per partition the span of sequences the window's runs cover.
      const lo = new Map<number, number>();
      const hi = new Map<number, number>();
      let last = first;
      for (let i = first; i < this.durableEntries; i++) {
        const r = this.run(i);
        if (r[0] >= windowEnd) break;
        last = i;
        const a = r[2] + Math.max(0, from - r[0]);
        const b = r[2] + r[3] - 1;
        if (!lo.has(r[1])) lo.set(r[1], a);
        hi.set(r[1], b);
      }
      // A partition's read covers its span unless it stopped short (a limit, or the log's bounded window): then only up to where it stopped.
      const got = new Map<number, StoredMessage[]>();
      const complete = new Map<number, number>();
      for (const [p, a] of lo) {
        const b = hi.get(p)!;
        const log = this.partitions[p];
        const batch = await log.scan(Math.max(a, log.state().firstSeq), { filter: opts.filter, maxMessages: max, maxBytes: opts.maxBytes });
        got.set(p, batch);
        complete.set(p, batch.length === 0 ? b : Math.min(b, batch[batch.length - 1].seq));
      }
      const out: StoredMessage[] = [];
      const at = new Map<number, number>();
      let bytes = 0;
      let reached = from - 1;
      for (let i = first; i <= last; i++) {
        const r = this.run(i);
        const p = r[1];
        const batch = got.get(p)!;
        let k = at.get(p) ?? 0;
        const runLast = r[2] + r[3] - 1;
        const upTo = Math.min(runLast, complete.get(p)!);
        let full = false;
        while (k < batch.length && batch[k].seq <= upTo) {
          const m = batch[k++];
          if (m.seq < r[2]) continue;
          const seq = r[0] + (m.seq - r[2]);
          if (seq < from) continue;
          if (v !== null && v.hidden(p, m.seq)) continue;
          out.push({ ...m, seq });
          bytes += m.data.length + (m.headers?.length ?? 0) + m.subject.length;
          if (out.length >= max || bytes >= maxBytes) {
            full = true;
            break;
          }
        }
        at.set(p, k);
        if (full) return out;
        if (upTo < runLast) {
          // This partition's read stopped inside the run: everything before its stopping point has been looked at.
          if (upTo >= r[2]) reached = Math.max(reached, r[0] + (upTo - r[2]));
          break;
        }
        reached = runLast - r[2] + r[0];
      }
      if (out.length > 0) return out;
      if (reached < from) break;
      from = reached + 1;
    }
    return [];
  }

  async close(): Promise<void> {
    await this.flush();
    this.closed = true;
    if (this.reopenTimer !== null) clearTimeout(this.reopenTimer);
    this.reopenTimer = null;
    await this.saveSummary().catch(() => undefined);
    await this.mark?.close();
    // Records held back by the door's rules never got a run: their publishers hear the stream went.
    this.failWaiters(new Error("the stream is closed"));
    await this.file?.close();
  }

  /** A view of the partitions in stream sequences, with MessageLog's read methods (what JetStream readers use). */
  view(): MergedLog {
    return new MergedLog(this, this.partitions, this.visibility);
  }
}

/** A run as order.map holds it: stream first, partition first, partition, count, and their CRC-32C. */
function encodeRun(streamFirst: number, partition: number, partFirst: number, count: number): Buffer {
  const b = Buffer.alloc(ENTRY);
  writeU64(b, 0, streamFirst);
  writeU64(b, 8, partFirst);
  b.writeUInt32LE(partition, 16);
  b.writeUInt32LE(count, 20);
  b.writeUInt32LE(crc32c(b, 0, 24), 24);
  return b;
}

/**
 * The partitions of a stream seen through its order: JetStream's reads by
 * stream sequence. Writes go to partitions, never through here.
 */
/** Lost partition sequences mapped to stream sequences at most (each costs a look-up in the runs). */
const MAX_LOST_MAPPED = 65_536;

export class MergedLog {
  constructor(
    readonly order: StreamOrder,
    private readonly partitions: MessageLog[],
    private readonly visibility: () => Visibility | null,
  ) {}

  private renumber(m: StoredMessage | null, seq: number): StoredMessage | null {
    return m === null ? null : { ...m, seq };
  }

  async get(seq: number): Promise<StoredMessage | null> {
    const at = this.order.locate(seq);
    if (at === null) return null;
    if (this.visibility()?.hidden(at[0], at[1]) === true) return null;
    return this.renumber(await this.partitions[at[0]].get(at[1]), seq);
  }

  scan(from: number, opts?: ScanOptions): Promise<StoredMessage[]> {
    return this.order.scan(from, opts);
  }

  /** Whether stream sequence `seq` names a record still stored in its partition. */
  has(seq: number): boolean {
    const at = this.order.locate(seq);
    return at !== null && this.partitions[at[0]].has(at[1]);
  }

  async next(after: number, filter?: string): Promise<StoredMessage | null> {
    return (await this.order.scan(after + 1, { filter, maxMessages: 1 }))[0] ?? null;
  }

  async firstAtOrAfter(time: number): Promise<StoredMessage | null> {
    let best = 0;
    for (let p = 0; p < this.partitions.length; p++) {
      const m = await this.partitions[p].firstAtOrAfter(time);
      if (m === null) continue;
      const s = this.order.streamSeqOf(p, m.seq);
      if (s > 0 && (best === 0 || s < best)) best = s;
    }
    return best === 0 ? null : this.next(best - 1);
  }

  /** The newest stream sequence of `subject` (literal) that has one, or 0. */
  lastSeqOf(subject: string): number {
    let best = 0;
    for (let p = 0; p < this.partitions.length; p++) {
      const pseq = Math.min(this.partitions[p].lastSeqOf(subject), this.order.position(p, Infinity));
      if (pseq > 0) best = Math.max(best, this.order.streamSeqOf(p, pseq));
    }
    return best;
  }

  async lastBySubject(subject: string): Promise<StoredMessage | null> {
    const seqs = this.lastPerSubject(subject);
    for (let i = seqs.length - 1; i >= 0; i--) {
      const m = await this.get(seqs[i]);
      if (m !== null) return m;
    }
    return null;
  }

  lastPerSubject(filter?: string): number[] {
    const out: number[] = [];
    for (const subject of this.subjectCounts(filter).keys()) {
      const s = this.lastSeqOf(subject);
      if (s > 0) out.push(s);
    }
    return out.sort((a, b) => a - b);
  }

  subjectCounts(filter?: string): Map<string, number> {
    const out = new Map<string, number>();
    for (const log of this.partitions) for (const [s, n] of log.subjectCounts(filter)) out.set(s, (out.get(s) ?? 0) + n);
    return out;
  }

  subjectCount(subject: string): number {
    let n = 0;
    for (const log of this.partitions) n += log.subjectCount(subject);
    return n;
  }

  get removals(): number {
    let n = 0;
    for (const log of this.partitions) n += log.removals;
    return n;
  }

  /**
   * Stored messages after stream sequence `after` that readers may see: per
   * partition, the count between its position at `after` and its last
   * sequence with a durable run, less hidden ranges.
   */
  pendingAfter(after: number, filter?: string): number {
    const v = this.visibility();
    let n = 0;
    for (let p = 0; p < this.partitions.length; p++) {
      const log = this.partitions[p];
      const from = this.order.position(p, after);
      const upTo = this.order.position(p, Infinity);
      if (upTo <= from) continue;
      n += log.pendingAfter(from, filter) - log.pendingAfter(upTo, filter);
      if (v !== null) for (const [a, b] of v.hiddenIn(p, from, upTo)) n -= log.pendingAfter(a - 1, filter) - log.pendingAfter(b, filter);
    }
    return n;
  }

  /** Stream sequences of records gone, between the first and the last (at most `max`): deleted_details. */
  deletedSequences(max: number): number[] {
    return this.order.deletedSequences(max);
  }

  async delete(seq: number): Promise<boolean> {
    const at = this.order.locate(seq);
    if (at === null) return false;
    return this.partitions[at[0]].delete(at[1]);
  }

  /**
   * A purge in stream sequences: below `upTo` (each partition below its
   * position there), by subject, or both. `keep` counts across partitions
   * and is refused (no partition can tell which of its messages are the
   * stream's newest N).
   */
  async purge(opts: PurgeOptions = {}): Promise<number> {
    if (opts.keep !== undefined) throw new Error("purge with keep is not supported on a stream with several partitions");
    let n = 0;
    for (let p = 0; p < this.partitions.length; p++) {
      const o: PurgeOptions = { filter: opts.filter };
      if (opts.upTo !== undefined) {
        const below = this.order.position(p, opts.upTo - 1) + 1;
        if (below <= 1) continue;
        o.upTo = below;
      } else {
        // Only what has a stream sequence: a record still waiting for one (an open transaction's) stays.
        o.upTo = this.order.position(p, Infinity) + 1;
      }
      n += await this.partitions[p].purge(o);
    }
    return n;
  }

  /** The partitions' lost ranges as stream sequences, and what they were computed from (their count and their ends' sum). */
  private lostMapped: { ranges: number; ends: number; lost: LostRange[] } | null = null;

  /**
   * The partitions' lost ranges (in their own sequences) as stream
   * sequences: a JetStream client reads `lost` as stream sequences, and
   * partition 1's 41..50 are other records there. A partition sequence with
   * no run (none was made before it was lost) has no stream sequence and
   * is left out. At most MAX_LOST_MAPPED sequences are mapped, once per
   * change of the ranges.
   */
  private lostInStreamSeqs(states: readonly LogState[]): LostRange[] {
    let ranges = 0;
    let ends = 0;
    for (const st of states) {
      ranges += st.lost.length;
      for (const l of st.lost) ends += l.to;
    }
    if (this.lostMapped !== null && this.lostMapped.ranges === ranges && this.lostMapped.ends === ends) return this.lostMapped.lost;
    const out: LostRange[] = [];
    let budget = MAX_LOST_MAPPED;
    for (let p = 0; p < states.length; p++) {
      for (const l of states[p].lost) {
        let bytes = l.bytes;
        for (let q = l.from; q <= l.to && budget > 0; q++, budget--) {
          const seq = this.order.streamSeqOf(p, q);
          const at = seq > 0 ? this.order.locate(seq) : null;
          if (at === null || at[0] !== p || at[1] !== q) continue;
          const prev = out[out.length - 1];
          if (prev !== undefined && prev.to === seq - 1) prev.to = seq;
          else out.push({ from: seq, to: seq, bytes: 0 });
          out[out.length - 1].bytes += bytes;
          bytes = 0;
        }
      }
    }
    out.sort((a, b) => a.from - b.from);
    this.lostMapped = { ranges, ends, lost: out };
    return out;
  }

  /**
   * The stream's state in stream sequences: first and last of the order,
   * messages, bytes and subjects over every partition, damage as the
   * partitions report it (their lost ranges mapped to stream sequences).
   */
  state(): LogState {
    const last = this.order.durableNext - 1;
    let first: number;
    try {
      first = this.order.firstSeq();
    } catch {
      // Its page of runs is damaged (the order's failure, reported below): nothing is told as stored.
      first = last + 1;
    }
    let messages = 0;
    let bytes = 0;
    let error: string | null = this.order.failure?.message ?? null;
    const corrupt: LogState["corrupt"] = [];
    const lost: LogState["lost"] = [];
    const states = this.partitions.map((log) => log.state());
    let hasLost = false;
    for (const st of states) {
      messages += st.messages;
      bytes += st.bytes;
      error ??= st.error;
      corrupt.push(...st.corrupt);
      if (st.lost.length > 0) hasLost = true;
    }
    if (hasLost) lost.push(...this.lostInStreamSeqs(states));
    const subjects = this.subjectCounts().size;
    const span = last >= first ? last - first + 1 : 0;
    return { firstSeq: first, lastSeq: last, messages, bytes, subjects, deleted: Math.max(0, span - messages), corrupt, lost, error };
  }
}
