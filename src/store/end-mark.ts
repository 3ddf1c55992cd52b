/**
 * A log's end mark: where its newest segment ended, and its last sequence,
 * as of the last round that landed (was acknowledged). The newest segment
 * has no index file until it is sealed or the log closes cleanly, so after
 * a crash nothing else says how long it was: cut at a batch boundary or
 * removed, every batch left reads whole, and the acknowledged sequences
 * after the cut would be dropped without a word and handed out again. The
 * mark lets recovery report them lost and never reuse them.
 *
 * It is written in place, not synced: it claims only what landed, so after
 * a power cut it is at most as far as what the disk kept under sync
 * `always` (the data was synced before the mark was written); under the
 * other policies a mark past the data is a loss that really happened. A
 * crash can leave it behind the log's true end, never ahead of it, except
 * across a truncation, which removes it first (see applyTruncation).
 * Writes coalesce: one in flight per log, the next at most every
 * END_MARK_SPACING_MS: a busy log costs at most 100 small writes a
 * second, a log taking a round now and then one per round, an idle one none.
 */

import { crc32c } from "../util/crc32c.js";
import { writeFully, type StoreFile, type StoreFs } from "../util/fs.js";

export const END_MARK_FILE = "end.mark";
const MAGIC = 0x4d45474e; // "NGEM"
const VERSION = 1;
/** magic u32 | version u8 | 3 reserved | segment first sequence f64 | end f64 | last sequence f64 | crc32c u32 (of the bytes before it) */
export const END_MARK_BYTES = 36;
const END_MARK_SPACING_MS = 10;
/**
 * A mark not written for this long lets its descriptor go: ten thousand
 * streams at rest hold none for their marks (the store's descriptors are a
 * pooled budget), and a busy log keeps its open.
 */
const END_MARK_IDLE_MS = 1000;
/** After a failed write, how long before the mark is tried again (each failure is logged, so at most one line per this). */
export const END_MARK_RETRY_MS = 30_000;

export interface EndMark {
  /** First sequence of the newest segment, which names its file. */
  segment: number;
  /** Bytes of that segment that had landed. */
  end: number;
  /** The log's last sequence then (data, or named by a tombstone batch as the next one, less one). */
  lastSeq: number;
}

export function encodeEndMark(m: EndMark, buf: Buffer = Buffer.alloc(END_MARK_BYTES)): Buffer {
  buf.writeUInt32LE(MAGIC, 0);
  buf.writeUInt32LE(VERSION, 4);
  buf.writeDoubleLE(m.segment, 8);
  buf.writeDoubleLE(m.end, 16);
  buf.writeDoubleLE(m.lastSeq, 24);
  buf.writeUInt32LE(crc32c(buf, 0, 32), 32);
  return buf;
}

/** The mark in `buf`, or why it cannot be read. */
export function decodeEndMark(buf: Buffer): EndMark | string {
  if (buf.length < END_MARK_BYTES) return `${buf.length} bytes, not ${END_MARK_BYTES}`;
  if (buf.readUInt32LE(0) !== MAGIC) return "not an end mark";
  if (buf.readUInt32LE(32) !== crc32c(buf, 0, 32)) return "its checksum does not match";
  if (buf[4] !== VERSION) return `version ${buf[4]} is not known`;
  const m = { segment: buf.readDoubleLE(8), end: buf.readDoubleLE(16), lastSeq: buf.readDoubleLE(24) };
  if (!Number.isSafeInteger(m.segment) || m.segment < 1 || !Number.isSafeInteger(m.end) || m.end < 0 || !Number.isSafeInteger(m.lastSeq) || m.lastSeq < 0) return "out of range";
  return m;
}

/**
 * Keeps a log's end mark current. `note` is called as rounds land (no I/O
 * there); the write happens in the background, one at a time. A failed
 * write stops the marks for END_MARK_RETRY_MS, then the mark is made anew
 * (the file may have been removed): a stale mark is only behind, never
 * ahead, and the log's own writes decide whether the disk is failing.
 */
export class EndMarkWriter {
  private file: StoreFile | null = null;
  /** Made at the first write: a log that never takes one (most of ten thousand streams at rest) costs nothing. */
  private buf: Buffer | null = null;
  private segment = 0;
  private end = 0;
  private lastSeq = 0;
  /** Noted and not yet written. */
  private due = false;
  private running: Promise<void> | null = null;
  private timer: NodeJS.Timeout | null = null;
  private idleTimer: NodeJS.Timeout | null = null;
  private lastWrite = 0;
  /** When the last write failed, 0 if it did not. */
  private failedAt = 0;
  private stopped = false;

  /** `exists`: the file is there (recovery read one), so it is written in place, never emptied first. */
  constructor(
    private readonly fs: StoreFs,
    private readonly path: string,
    private exists: boolean,
    private readonly warn: (msg: string) => void,
    private readonly retryMs = END_MARK_RETRY_MS,
  ) {}

  private get failed(): boolean {
    if (this.failedAt === 0) return false;
    if (Date.now() - this.failedAt < this.retryMs) return true;
    this.failedAt = 0;
    return false;
  }

  note(segment: number, end: number, lastSeq: number): void {
    if (this.stopped || this.failed) return;
    this.segment = segment;
    this.end = end;
    this.lastSeq = lastSeq;
    this.due = true;
    if (this.running === null && this.timer === null) this.start();
  }

  private start(): void {
    if (this.idleTimer !== null) clearTimeout(this.idleTimer);
    this.idleTimer = null;
    const wait = this.lastWrite + END_MARK_SPACING_MS - Date.now();
    if (wait > 0) {
      this.timer = setTimeout(() => {
        this.timer = null;
        if (this.due && this.running === null && !this.stopped) this.start();
      }, wait);
      this.timer.unref();
      return;
    }
    this.running = this.writeDue().finally(() => {
      this.running = null;
      this.lastWrite = Date.now();
      if (this.due && !this.stopped && !this.failed) this.start();
      else if (this.file !== null && !this.stopped) {
        this.idleTimer = setTimeout(() => {
          this.idleTimer = null;
          if (this.running !== null || this.timer !== null || this.stopped) return;
          const f = this.file;
          this.file = null;
          void f?.close().catch(() => undefined);
        }, END_MARK_IDLE_MS);
        this.idleTimer.unref();
      }
    });
  }

  private async writeDue(): Promise<void> {
    this.due = false;
    const buf = encodeEndMark({ segment: this.segment, end: this.end, lastSeq: this.lastSeq }, this.buf ?? (this.buf = Buffer.alloc(END_MARK_BYTES)));
    try {
      if (!this.exists) {
        // Made whole under a temporary name (an open removes those): a crash between a create and its first write left
        // an empty mark, which the next open could only call unreadable.
        const tmp = `${this.path}.tmp`;
        const f = await this.fs.open(tmp, "replace");
        try {
          await writeFully(f, buf, 0);
        } finally {
          await f.close();
        }
        await this.fs.rename(tmp, this.path);
        this.exists = true;
        return;
      }
      if (this.file === null) this.file = await this.fs.open(this.path, "existing");
      await writeFully(this.file, buf, 0);
    } catch (err) {
      this.failedAt = Date.now();
      // Made anew at the retry: the file may be gone (removed by hand), or the handle bad.
      this.exists = false;
      const f = this.file;
      this.file = null;
      await f?.close().catch(() => undefined);
      this.warn(`${this.path}: ${(err as Error).message}; the log's end is not marked for ${Math.round(this.retryMs / 1000)} s (a crash meanwhile could cut it unreported)`);
    }
  }

  /** Writes what is noted (a clean close keeps the mark current), then lets the file go. */
  async close(): Promise<void> {
    if (this.timer !== null) clearTimeout(this.timer);
    this.timer = null;
    while (this.running !== null) await this.running;
    if (this.due && !this.failed && !this.stopped) await this.writeDue();
    await this.release();
  }

  /** Stops writing, with nothing more written (a truncation removes the file next). */
  async stop(): Promise<void> {
    this.stopped = true;
    if (this.timer !== null) clearTimeout(this.timer);
    this.timer = null;
    while (this.running !== null) await this.running;
    await this.release();
  }

  private async release(): Promise<void> {
    this.stopped = true;
    if (this.idleTimer !== null) clearTimeout(this.idleTimer);
    this.idleTimer = null;
    const f = this.file;
    this.file = null;
    await f?.close().catch(() => undefined);
  }
}

/** The mark in `dir`'s file, null if there is none, or why it cannot be read. */
export async function readEndMark(fs: StoreFs, path: string): Promise<EndMark | string | null> {
  let buf: Buffer;
  try {
    buf = await fs.readFile(path);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === "ENOENT") return null;
    return (err as Error).message;
  }
  return decodeEndMark(buf);
}
