/**
 * What a log keeps about damage found in its files: the sequences lost
 * (reported in state().lost, kept in `lost.json` so the report outlives the
 * damaged bytes, never handed out again) and the damaged bytes themselves,
 * copied to `quarantine/<segment>@<position>.bad` for whoever investigates.
 */

import { join } from "node:path";
import { writeFileDurably, writeFully, type StoreFile, type StoreFs } from "../util/fs.js";
import { parseStateFile, stateFileText } from "../util/persist.js";
import type { LostRange } from "./log.js";

const LOST_FILE = "lost.json";
const QUARANTINE_DIR = "quarantine";

export class LostRecord {
  readonly ranges: LostRange[] = [];
  private dirty = false;
  private saving: Promise<void> | null = null;

  constructor(
    private readonly fs: StoreFs,
    private readonly dir: string,
    private readonly warn: (text: string) => void,
  ) {}

  /** Reads lost.json; an unreadable one is reported and written anew from what this open finds. */
  async load(): Promise<void> {
    let text: Buffer;
    try {
      text = await this.fs.readFile(join(this.dir, LOST_FILE));
    } catch {
      return; // none: nothing was ever lost
    }
    try {
      // Checksummed as the other state files: a flipped digit that still parses would shrink the report unseen.
      const list = parseStateFile(text.toString("utf8")) as LostRange[];
      for (const l of list) {
        if (Number.isSafeInteger(l.from) && Number.isSafeInteger(l.to) && l.from <= l.to) this.ranges.push({ from: l.from, to: l.to, bytes: Number(l.bytes) || 0 });
      }
    } catch (err) {
      this.warn(`${join(this.dir, LOST_FILE)} is unreadable (${(err as Error).message}); it is rewritten from what this open finds`);
      this.dirty = true;
    }
  }

  /** Sequences from..to are gone for good: recorded (once) and reported. */
  note(from: number, to: number, bytes: number): void {
    if (to < from) return;
    if (this.ranges.some((l) => l.from === from && l.to === to)) return;
    this.ranges.push({ from, to, bytes });
    this.ranges.sort((x, y) => x.from - y.from);
    this.dirty = true;
    this.warn(`${this.dir}: sequences ${from}..${to} are lost to damage${bytes > 0 ? ` (${bytes} bytes quarantined)` : ""}`);
  }

  /** The highest lost sequence, 0 if none. */
  get highest(): number {
    let h = 0;
    for (const l of this.ranges) h = Math.max(h, l.to);
    return h;
  }

  /** Whether lost.json does not yet hold every range (never written since a change, or its write failed). */
  get unsaved(): boolean {
    return this.dirty;
  }

  /** Writes lost.json if it changed. A failed write leaves it to write again (the next save, or saveLater). */
  async save(): Promise<void> {
    while (this.dirty) {
      this.dirty = false;
      try {
        await writeFileDurably(this.fs, join(this.dir, LOST_FILE), Buffer.from(stateFileText(this.ranges)));
      } catch (err) {
        this.dirty = true;
        throw err;
      }
    }
  }

  /**
   * Saves in the background (damage found on read); `closed` says whether to try again after a change meanwhile.
   * After a failed write it is tried again by the next call (the next maintenance, the close), not at once.
   */
  saveLater(closed: () => boolean): void {
    if (this.saving !== null || !this.dirty) return;
    let failed = false;
    this.saving = this.save()
      .catch((err) => {
        failed = true;
        this.warn(`${join(this.dir, LOST_FILE)}: ${(err as Error).message}`);
      })
      .finally(() => {
        this.saving = null;
        if (!failed && this.dirty && !closed()) this.saveLater(closed);
      });
  }

  /** Waits for a background save. */
  async settled(): Promise<void> {
    if (this.saving !== null) await this.saving;
  }
}

/**
 * Rewrites `dir`'s lost.json without the sequences from `next` on (a
 * truncation there hands them out again); nothing to do if none is listed.
 */
export async function forgetLostFrom(fs: StoreFs, dir: string, next: number): Promise<void> {
  let list: LostRange[];
  try {
    list = parseStateFile((await fs.readFile(join(dir, LOST_FILE))).toString("utf8")) as LostRange[];
  } catch {
    return; // none, or unreadable: the next open rewrites it from what it finds
  }
  if (!list.some((l) => l.to >= next)) return;
  const kept = list.filter((l) => l.from < next).map((l) => ({ ...l, to: Math.min(l.to, next - 1) }));
  await writeFileDurably(fs, join(dir, LOST_FILE), Buffer.from(stateFileText(kept)));
}

/**
 * Copies damaged bytes to `quarantine/<name>.bad` under `dir`, unless a file
 * of that name is there already (found and kept at an earlier open).
 */
export async function quarantine(fs: StoreFs, dir: string, name: string, bytes: Buffer): Promise<void> {
  const qdir = join(dir, QUARANTINE_DIR);
  // Only inside the log's directory as it is: one removed under the running server (its reads failing for that) is not
  // made again, with the store around it, by a copy of what could not be read.
  if (fs.identity?.(dir) === null) throw new Error(`${dir} is gone: nothing is quarantined there`);
  await fs.mkdirp(qdir);
  let fh: StoreFile;
  try {
    fh = await fs.open(join(qdir, `${name}.bad`), "create");
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === "EEXIST") return;
    throw err;
  }
  try {
    await writeFully(fh, bytes, 0);
    await fh.datasync();
  } finally {
    await fh.close();
  }
  await fs.syncDir(qdir);
}

/**
 * `ranges` without the sequences in `remove` (flat inclusive pairs, any
 * order): damage over sequences a tombstone deleted lost nothing. A range's
 * bytes stay with its first surviving piece.
 */
export function withoutRanges(ranges: readonly LostRange[], remove: readonly number[]): LostRange[] {
  const cuts: Array<[number, number]> = [];
  for (let i = 0; i < remove.length; i += 2) cuts.push([remove[i], remove[i + 1]]);
  cuts.sort((a, b) => a[0] - b[0]);
  const out: LostRange[] = [];
  for (const r of ranges) {
    let from = r.from;
    let bytes = r.bytes;
    for (const [a, b] of cuts) {
      if (b < from || a > r.to) continue;
      if (a > from) {
        out.push({ from, to: a - 1, bytes });
        bytes = 0;
      }
      from = Math.max(from, b + 1);
      if (from > r.to) break;
    }
    if (from <= r.to) out.push({ from, to: r.to, bytes });
  }
  return out;
}
