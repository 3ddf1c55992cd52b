/**
 * A simulated disk behind the server's file seam (src/util/fs.ts), in the
 * spirit of TigerBeetle's testing/storage.zig: it keeps what was made durable
 * apart from what was only written, and a simulated crash (power loss, not
 * kill -9: the page cache goes too) keeps the durable state plus an
 * arbitrary, seeded selection of everything since:
 *
 * - file data: each write since the file's last datasync is kept, dropped,
 *   or kept in part (a torn write), independently, so a later write can
 *   survive an earlier one and leave a hole of zeros; truncates likewise;
 * - directory entries (create, rename, remove): a random prefix of the
 *   changes since the directory's last sync, in order, as a journal replays.
 *
 * Directories themselves are created durable at once (nodeFs syncs the parent
 * of every directory it creates). Every call on a crashed disk fails.
 */

import { basename, dirname } from "node:path";
import type { OpenMode, StoreFile, StoreFs } from "../../src/util/fs.js";

type Op = { kind: "write"; pos: number; bytes: Buffer } | { kind: "truncate"; size: number };
type DirOp = { kind: "link"; name: string; inode: Inode } | { kind: "unlink"; name: string };

class Inode {
  data: Buffer = Buffer.alloc(0) as Buffer;
  durable: Buffer = Buffer.alloc(0);
  pending: Op[] = [];
  mtime = 0;
}

function apply(data: Buffer, op: Op): Buffer {
  if (op.kind === "truncate") {
    if (op.size <= data.length) return Buffer.from(data.subarray(0, op.size));
    return Buffer.concat([data, Buffer.alloc(op.size - data.length)]);
  }
  const end = op.pos + op.bytes.length;
  const out = end > data.length ? Buffer.concat([data, Buffer.alloc(end - data.length)]) : data;
  op.bytes.copy(out, op.pos);
  return out;
}

function crashError(): Error {
  return Object.assign(new Error("EIO: simulated crash"), { code: "EIO" });
}

function enoent(path: string): Error {
  return Object.assign(new Error(`ENOENT: no such file or directory, '${path}'`), { code: "ENOENT" });
}

/** One turn of the event loop, so that simulated I/O interleaves with other work as real I/O does. */
function turn(): Promise<void> {
  return new Promise((r) => setImmediate(r));
}

export class SimFs implements StoreFs {
  /** Directory → its current entries. */
  private readonly dirs = new Map<string, Map<string, Inode>>();
  /** Directory → its entries as of its last sync, and the changes since. */
  private readonly durableDirs = new Map<string, Map<string, Inode>>();
  private readonly pendingDirs = new Map<string, DirOp[]>();
  private crashed = false;
  private clock = 1;
  /** Calls that reached the disk, by kind: lets tests see what a component did. */
  readonly calls = { write: 0, datasync: 0, syncDir: 0, open: 0 };

  private live(): void {
    if (this.crashed) throw crashError();
  }

  private dir(path: string): Map<string, Inode> {
    const d = this.dirs.get(path);
    if (d === undefined) throw enoent(path);
    return d;
  }

  private link(dir: string, name: string, inode: Inode): void {
    this.dir(dir).set(name, inode);
    this.pendingDirs.get(dir)!.push({ kind: "link", name, inode });
  }

  private unlink(dir: string, name: string): void {
    this.dir(dir).delete(name);
    this.pendingDirs.get(dir)!.push({ kind: "unlink", name });
  }

  async open(path: string, mode: OpenMode): Promise<StoreFile> {
    await turn();
    this.live();
    this.calls.open++;
    const d = this.dir(dirname(path));
    let inode = d.get(basename(path));
    if (inode === undefined) {
      if (mode === "existing") throw enoent(path);
      inode = new Inode();
      inode.mtime = this.clock++;
      this.link(dirname(path), basename(path), inode);
    } else if (mode === "create") {
      throw Object.assign(new Error(`EEXIST: file already exists, '${path}'`), { code: "EEXIST" });
    } else if (mode === "replace") {
      this.mutate(inode, { kind: "truncate", size: 0 });
    }
    return new SimFile(this, inode);
  }

  /** Applies a data change to the file's current content and remembers it as not yet durable. */
  mutate(inode: Inode, op: Op): void {
    this.live();
    inode.data = apply(inode.data, op);
    inode.pending.push(op);
    inode.mtime = this.clock++;
  }

  sync(inode: Inode): void {
    this.live();
    this.calls.datasync++;
    inode.durable = Buffer.from(inode.data);
    inode.pending = [];
  }

  assertLive(): void {
    this.live();
  }

  async readdir(dir: string): Promise<string[]> {
    await turn();
    this.live();
    return [...this.dir(dir).keys()];
  }

  async mkdirp(dir: string): Promise<void> {
    this.live();
    for (let d = dir; !this.dirs.has(d); d = dirname(d)) {
      this.dirs.set(d, new Map());
      this.durableDirs.set(d, new Map());
      this.pendingDirs.set(d, []);
      if (dirname(d) === d) break;
    }
  }

  async rename(from: string, to: string): Promise<void> {
    await turn();
    this.live();
    if (dirname(from) !== dirname(to)) throw new Error("SimFs renames within one directory only");
    const inode = this.dir(dirname(from)).get(basename(from));
    if (inode === undefined) throw enoent(from);
    this.unlink(dirname(from), basename(from));
    this.link(dirname(to), basename(to), inode);
  }

  async remove(path: string): Promise<void> {
    await turn();
    this.live();
    const d = this.dirs.get(dirname(path));
    if (d === undefined || !d.has(basename(path))) return;
    this.unlink(dirname(path), basename(path));
  }

  async syncDir(dir: string): Promise<void> {
    await turn();
    this.live();
    this.calls.syncDir++;
    this.durableDirs.set(dir, new Map(this.dir(dir)));
    this.pendingDirs.set(dir, []);
  }

  async readFile(path: string): Promise<Buffer> {
    await turn();
    this.live();
    const inode = this.dir(dirname(path)).get(basename(path));
    if (inode === undefined) throw enoent(path);
    return Buffer.from(inode.data);
  }

  async mtime(path: string): Promise<number> {
    this.live();
    const inode = this.dir(dirname(path)).get(basename(path));
    if (inode === undefined) throw enoent(path);
    return inode.mtime;
  }

  readSync(path: string, position: number, length: number): Buffer | null {
    this.live();
    const inode = this.dir(dirname(path)).get(basename(path));
    if (inode === undefined) throw enoent(path);
    if (position + length > inode.data.length) return null;
    return Buffer.from(inode.data.subarray(position, position + length));
  }

  /** The bytes of a file as they stand (tests damage them with `damage`). */
  contents(path: string): Buffer | undefined {
    return this.dirs.get(dirname(path))?.get(basename(path))?.data;
  }

  /** Overwrites bytes of a file as if the disk had rotted them: durable at once, no trace in the pending state. */
  damage(path: string, at: number, xor = 0x10): void {
    const inode = this.dirs.get(dirname(path))?.get(basename(path));
    if (inode === undefined) throw enoent(path);
    if (at < inode.data.length) inode.data[at] ^= xor;
    if (at < inode.durable.length) inode.durable[at] ^= xor;
  }

  list(dir: string): string[] {
    return [...(this.dirs.get(dir)?.keys() ?? [])].sort();
  }

  /**
   * Power loss: this disk fails every call from now on, and the returned disk
   * holds what survived, chosen with `random` (a seeded generator in [0, 1)).
   */
  crash(random: () => number): SimFs {
    this.crashed = true;
    const next = new SimFs();
    next.clock = this.clock;
    const copies = new Map<Inode, Inode>();
    const survivor = (inode: Inode): Inode => {
      let c = copies.get(inode);
      if (c !== undefined) return c;
      let data: Buffer = Buffer.from(inode.durable);
      for (const op of inode.pending) {
        const r = random();
        if (r < 0.4) continue; // never reached the platter
        if (op.kind === "write" && r < 0.6) {
          // Torn: a prefix of whole 512-byte sectors, or of any length.
          const cut = Math.floor(random() * op.bytes.length);
          const len = random() < 0.5 ? cut - (cut % 512) : cut;
          data = apply(data, { kind: "write", pos: op.pos, bytes: op.bytes.subarray(0, len) });
          continue;
        }
        data = apply(data, op);
      }
      c = new Inode();
      c.data = data;
      c.durable = Buffer.from(data);
      c.mtime = inode.mtime;
      copies.set(inode, c);
      return c;
    };
    for (const [path, durable] of this.durableDirs) {
      const entries = new Map(durable);
      const ops = this.pendingDirs.get(path) ?? [];
      const kept = Math.floor(random() * (ops.length + 1)); // a prefix, as the journal replays it
      for (let i = 0; i < kept; i++) {
        const op = ops[i];
        if (op.kind === "link") entries.set(op.name, op.inode);
        else entries.delete(op.name);
      }
      const copy = new Map<string, Inode>();
      for (const [name, inode] of entries) copy.set(name, survivor(inode));
      next.dirs.set(path, copy);
      next.durableDirs.set(path, new Map(copy));
      next.pendingDirs.set(path, []);
    }
    return next;
  }
}

class SimFile implements StoreFile {
  private closed = false;
  constructor(
    private readonly fs: SimFs,
    private readonly inode: Inode,
  ) {}

  private check(): void {
    this.fs.assertLive();
    if (this.closed) throw new Error("file is closed");
  }

  async read(buf: Buffer, offset: number, length: number, position: number): Promise<number> {
    await turn();
    this.check();
    const data = this.inode.data;
    if (position >= data.length) return 0;
    return data.copy(buf, offset, position, Math.min(data.length, position + length));
  }

  async write(buf: Buffer, offset: number, length: number, position: number): Promise<number> {
    await turn();
    this.check();
    this.fs.calls.write++;
    this.fs.mutate(this.inode, { kind: "write", pos: position, bytes: Buffer.from(buf.subarray(offset, offset + length)) });
    return length;
  }

  async writev(bufs: readonly Buffer[], position: number): Promise<number> {
    await turn();
    this.check();
    this.fs.calls.write++;
    const bytes = Buffer.concat(bufs);
    this.fs.mutate(this.inode, { kind: "write", pos: position, bytes });
    return bytes.length;
  }

  async truncate(size: number): Promise<void> {
    await turn();
    this.check();
    this.fs.mutate(this.inode, { kind: "truncate", size });
  }

  async datasync(): Promise<void> {
    await turn();
    this.check();
    this.fs.sync(this.inode);
  }

  async size(): Promise<number> {
    this.check();
    return this.inode.data.length;
  }

  async close(): Promise<void> {
    this.closed = true;
  }
}
