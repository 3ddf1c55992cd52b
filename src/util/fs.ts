/**
 * The file operations the server performs, behind one seam, and the one
 * durable replace (writeFileDurably) everything uses. The real disk
 * (`nodeFs`) opens files lazily from a process-wide pool of descriptors, so
 * that ten thousand logs fit in a descriptor limit of 1,024; tests put a
 * simulated disk behind the same interface, one that forgets every unsynced
 * byte at a simulated crash (kill -9 keeps the page cache and cannot show a
 * missing fsync; see test/helpers/sim-fs.ts).
 */

import { promises as fsp, constants as fsc, closeSync, fstatSync, openSync, readFileSync, readSync, statSync } from "node:fs";
import type { FileHandle } from "node:fs/promises";
import { dirname, resolve } from "node:path";

export interface StoreFile {
  /** Bytes read into buf[offset, offset+length) from `position`; fewer at the end of the file. */
  read(buf: Buffer, offset: number, length: number, position: number): Promise<number>;
  write(buf: Buffer, offset: number, length: number, position: number): Promise<number>;
  /** Writes `bufs` back to back from `position` in one call (pwritev); returns the bytes written, which may be fewer. */
  writev(bufs: readonly Buffer[], position: number): Promise<number>;
  truncate(size: number): Promise<void>;
  /** Makes the file's data (and its size) durable; not its directory entry. */
  datasync(): Promise<void>;
  size(): Promise<number>;
  close(): Promise<void>;
  /**
   * Whether the file still has a name (fstat's link count above 0), read
   * synchronously from the descriptor held; null when none is held or the
   * disk cannot tell. A file removed while open takes writes and syncs
   * without error, and they are gone with its last descriptor.
   */
  linked?(): boolean | null;
}

/** `existing`: must exist; `create`: must not exist (O_EXCL); `replace`: created or emptied. */
export type OpenMode = "existing" | "create" | "replace";

export interface StoreFs {
  open(path: string, mode: OpenMode): Promise<StoreFile>;
  /** Names in `dir`; a missing directory is an error. */
  readdir(dir: string): Promise<string[]>;
  mkdirp(dir: string): Promise<void>;
  /** Replaces `to` atomically; durable once the directory is synced. */
  rename(from: string, to: string): Promise<void>;
  /** Unlinks a file; a missing one is not an error. */
  remove(path: string): Promise<void>;
  /** Makes the directory's entries (creates, renames, removes) durable. */
  syncDir(dir: string): Promise<void>;
  readFile(path: string): Promise<Buffer>;
  /** Modification time in ms, for a file that exists. */
  mtime(path: string): Promise<number>;
  /**
   * `length` bytes at `position`, read synchronously, or null if the file is
   * shorter: a segment's index detail, loaded when a query needs it.
   */
  readSync(path: string, position: number, length: number): Buffer | null;
  /** Which directory `path` names now ("device:inode", read synchronously), or null if there is none. */
  identity?(path: string): string | null;
}

/** Writes all of buf at `pos`, however many calls it takes. */
export async function writeFully(file: StoreFile, buf: Buffer, pos: number): Promise<void> {
  let off = 0;
  while (off < buf.length) {
    const n = await file.write(buf, off, buf.length - off, pos + off);
    if (n <= 0) throw new Error("write made no progress");
    off += n;
  }
}

/** Writes all of `bufs`, back to back, at `pos`, however many calls it takes. */
export async function writeFullyV(file: StoreFile, bufs: readonly Buffer[], pos: number): Promise<void> {
  let parts = bufs.filter((b) => b.length > 0);
  while (parts.length > 0) {
    let n = await file.writev(parts, pos);
    if (n <= 0) throw new Error("write made no progress");
    pos += n;
    let done = 0;
    while (done < parts.length && n >= parts[done].length) n -= parts[done++].length;
    parts = parts.slice(done);
    if (n > 0) parts[0] = parts[0].subarray(n);
  }
}

/** Reads exactly `len` bytes at `pos`, or null if the file is shorter. */
export async function readExactly(file: StoreFile, len: number, pos: number): Promise<Buffer | null> {
  const buf = Buffer.allocUnsafe(len);
  let off = 0;
  while (off < len) {
    const n = await file.read(buf, off, len - off, pos + off);
    if (n <= 0) return null;
    off += n;
  }
  return buf;
}

// ---- the real disk, with pooled descriptors ----

/**
 * The store's share of the process's descriptor limit: a quarter of the soft
 * limit (sockets need the rest), at least 16, at most 4,096. Read from
 * /proc/self/limits where there is one.
 */
function defaultBudget(): number {
  let soft = 1024;
  try {
    const m = /^Max open files\s+(\d+|unlimited)/m.exec(readFileSync("/proc/self/limits", "utf8"));
    if (m !== null) soft = m[1] === "unlimited" ? 65536 : Number(m[1]);
  } catch {
    // not Linux: assume the common default
  }
  return Math.max(16, Math.min(4096, Math.floor(soft / 4)));
}

/**
 * Open files of the store, least recently used first. A file in use is never
 * closed; when every file is in use the budget is exceeded rather than
 * waited on (a wait could deadlock a reader holding one file for another).
 */
class DescriptorPool {
  budget = defaultBudget();
  private readonly open = new Map<PooledFile, true>();
  private readonly byPath = new Map<string, Set<PooledFile>>();
  /** Descriptors opened since start (tests read it to see the pool at work). */
  opens = 0;

  get openCount(): number {
    return this.open.size;
  }

  track(f: PooledFile): void {
    let s = this.byPath.get(f.path);
    if (s === undefined) this.byPath.set(f.path, (s = new Set()));
    s.add(f);
  }

  untrack(f: PooledFile): void {
    this.open.delete(f);
    const s = this.byPath.get(f.path);
    s?.delete(f);
    if (s?.size === 0) this.byPath.delete(f.path);
  }

  opened(f: PooledFile): void {
    this.opens++;
    this.open.set(f, true);
    this.trim();
  }

  touch(f: PooledFile): void {
    if (!this.open.has(f)) return;
    this.open.delete(f);
    this.open.set(f, true);
    this.trim();
  }

  /** Closes idle descriptors, oldest first, until the pool is within its budget. */
  trim(): void {
    if (this.open.size <= this.budget) return;
    for (const f of this.open.keys()) {
      if (this.open.size <= this.budget) break;
      // A file whose name now means another file (renamed over, removed) could not be opened again.
      if (f.users === 0 && !f.orphaned) f.release();
    }
  }

  /** `from` was renamed to `to`: handles on `from` follow it, handles on the old `to` lose their name. */
  renamed(from: string, to: string): void {
    this.orphan(to);
    const s = this.byPath.get(from);
    if (s === undefined) return;
    this.byPath.delete(from);
    for (const f of s) {
      f.path = to;
      this.track(f);
    }
  }

  orphan(path: string): void {
    const s = this.byPath.get(path);
    if (s === undefined) return;
    this.byPath.delete(path);
    for (const f of s) f.orphaned = true;
  }

  closed(f: PooledFile): void {
    this.open.delete(f);
  }
}

export const descriptorPool = new DescriptorPool();

class PooledFile implements StoreFile {
  private fh: FileHandle | null = null;
  private opening: Promise<FileHandle> | null = null;
  users = 0;
  /** The path no longer names this file: it can't be reopened once released. */
  orphaned = false;
  private closedForGood = false;

  constructor(
    public path: string,
    fh: FileHandle,
  ) {
    this.fh = fh;
    descriptorPool.track(this);
    descriptorPool.opened(this);
  }

  private async handle(): Promise<FileHandle> {
    if (this.fh !== null) return this.fh;
    if (this.closedForGood) throw new Error(`${this.path}: file is closed`);
    if (this.orphaned) throw Object.assign(new Error(`ENOENT: ${this.path} was replaced or removed`), { code: "ENOENT" });
    this.opening ??= (async () => {
      try {
        const fh = await openRetrying(this.path, fsc.O_RDWR);
        this.fh = fh;
        descriptorPool.opened(this);
        return fh;
      } finally {
        this.opening = null;
      }
    })();
    return this.opening;
  }

  private async use<T>(op: (fh: FileHandle) => Promise<T>): Promise<T> {
    this.users++;
    try {
      return await op(await this.handle());
    } finally {
      this.users--;
      descriptorPool.touch(this);
    }
  }

  /** Closes the descriptor of an idle file; the next use opens it again. */
  release(): void {
    const fh = this.fh;
    if (fh === null) return;
    this.fh = null;
    descriptorPool.closed(this);
    void fh.close().catch(() => undefined);
  }

  read(buf: Buffer, offset: number, length: number, position: number): Promise<number> {
    return this.use(async (fh) => (await fh.read(buf, offset, length, position)).bytesRead);
  }

  write(buf: Buffer, offset: number, length: number, position: number): Promise<number> {
    return this.use(async (fh) => (await fh.write(buf, offset, length, position)).bytesWritten);
  }

  writev(bufs: readonly Buffer[], position: number): Promise<number> {
    return this.use(async (fh) => (await fh.writev(bufs as Buffer[], position)).bytesWritten);
  }

  truncate(size: number): Promise<void> {
    return this.use((fh) => fh.truncate(size));
  }

  datasync(): Promise<void> {
    return this.use((fh) => fh.datasync());
  }

  size(): Promise<number> {
    return this.use(async (fh) => (await fh.stat()).size);
  }

  linked(): boolean | null {
    try {
      // Released by the pool (rare: a full pool, right after the sync): its name, at least, must still be there.
      if (this.fh === null) return this.orphaned || this.closedForGood ? null : statSync(this.path, { throwIfNoEntry: false }) !== undefined;
      return fstatSync(this.fh.fd).nlink > 0;
    } catch {
      return null;
    }
  }

  async close(): Promise<void> {
    this.closedForGood = true;
    descriptorPool.untrack(this);
    const fh = this.fh;
    this.fh = null;
    if (fh !== null) await fh.close();
  }
}

/** Opens a file; when the process is out of descriptors, closes idle store files and tries once more. */
async function openRetrying(path: string, flags: number): Promise<FileHandle> {
  try {
    return await fsp.open(path, flags, 0o644);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== "EMFILE" && (err as NodeJS.ErrnoException).code !== "ENFILE") throw err;
    const keep = descriptorPool.budget;
    descriptorPool.budget = Math.max(0, Math.floor(descriptorPool.openCount / 2));
    descriptorPool.trim();
    descriptorPool.budget = keep;
    return fsp.open(path, flags, 0o644);
  }
}

const OPEN_FLAGS: Record<OpenMode, number> = {
  existing: fsc.O_RDWR,
  create: fsc.O_RDWR | fsc.O_CREAT | fsc.O_EXCL,
  replace: fsc.O_RDWR | fsc.O_CREAT | fsc.O_TRUNC,
};

/**
 * mkdir -p, one directory at a time: returns the first directory it made, or undefined if `dir` was there. Node's
 * `mkdir(..., { recursive: true })` spins for ever where mkdir answers ENOENT under a parent that exists (/proc).
 */
export async function makeDirs(dir: string): Promise<string | undefined> {
  const missing: string[] = [];
  for (let d = resolve(dir); ; d = dirname(d)) {
    const st = await fsp.stat(d).catch((err: NodeJS.ErrnoException) => {
      if (err.code === "ENOENT") return null;
      throw err;
    });
    if (st !== null) {
      if (st.isDirectory()) break;
      throw Object.assign(new Error(`ENOTDIR: not a directory, mkdir '${d}'`), { code: "ENOTDIR", path: d });
    }
    missing.push(d);
    if (dirname(d) === d) break;
  }
  let first: string | undefined;
  for (let i = missing.length - 1; i >= 0; i--) {
    try {
      await fsp.mkdir(missing[i]);
      first ??= missing[i];
    } catch (err) {
      // Made meanwhile by another: fine if it is a directory.
      if ((err as NodeJS.ErrnoException).code !== "EEXIST" || !(await fsp.stat(missing[i])).isDirectory()) throw err;
    }
  }
  return first;
}

export const nodeFs: StoreFs = {
  async open(path, mode) {
    return new PooledFile(path, await openRetrying(path, OPEN_FLAGS[mode]));
  },
  readdir: (dir) => fsp.readdir(dir),
  async mkdirp(dir) {
    // Each directory it creates is made durable in its parent, or a crash could drop files synced inside it.
    const made = await makeDirs(dir);
    if (made === undefined) return;
    for (let d = resolve(dir); d.length >= made.length; d = dirname(d)) {
      await this.syncDir(dirname(d));
      if (d === made) break;
    }
  },
  async rename(from, to) {
    await fsp.rename(from, to);
    descriptorPool.renamed(from, to);
  },
  async remove(path) {
    await fsp.rm(path, { force: true });
    descriptorPool.orphan(path);
  },
  async syncDir(dir) {
    const d = await openRetrying(dir, fsc.O_RDONLY);
    try {
      await d.sync();
    } finally {
      await d.close();
    }
  },
  readFile: (path) => fsp.readFile(path),
  async mtime(path) {
    return (await fsp.stat(path)).mtimeMs;
  },
  readSync(path, position, length) {
    let fd: number;
    try {
      fd = openSync(path, "r");
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== "EMFILE") throw err;
      const keep = descriptorPool.budget;
      descriptorPool.budget = Math.max(0, Math.floor(descriptorPool.openCount / 2));
      descriptorPool.trim();
      descriptorPool.budget = keep;
      fd = openSync(path, "r");
    }
    try {
      const buf = Buffer.allocUnsafe(length);
      let off = 0;
      while (off < length) {
        const n = readSync(fd, buf, off, length - off, position + off);
        if (n <= 0) return null;
        off += n;
      }
      return buf;
    } finally {
      closeSync(fd);
    }
  },
  identity(path) {
    try {
      const st = statSync(path, { throwIfNoEntry: false });
      return st === undefined ? null : `${st.dev}:${st.ino}`;
    } catch {
      return null; // a parent is no directory now (ENOTDIR): nothing is there
    }
  },
};

/** Replaces `path` with `bytes` so that a crash leaves the old file or the new one: temp file, fsync, rename, fsync of the directory. */
export async function writeFileDurably(fs: StoreFs, path: string, bytes: Buffer): Promise<void> {
  const tmp = `${path}.tmp`;
  const fh = await fs.open(tmp, "replace");
  try {
    await writeFully(fh, bytes, 0);
    await fh.datasync();
  } finally {
    await fh.close();
  }
  await fs.rename(tmp, path);
  await fs.syncDir(dirname(path));
}
