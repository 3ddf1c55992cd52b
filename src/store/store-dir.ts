/**
 * The store directory, checked before anything is stored in it: it must be a
 * directory, take a synced write, have room, and belong to one server.
 *
 * Two servers writing the same logs overwrite each other's acknowledged
 * messages, so the second one must not start. Node has no flock(2), so the
 * lock is a file created with O_EXCL that names its holder (pid, the
 * process's start time, host); a lock whose holder is gone (kill -9) is
 * taken over. The start time tells a live holder from an unrelated process
 * that reuses its pid. Not excluded: two servers that start at the same
 * instant on a directory whose holder died could both take it over.
 */

import { promises as fsp, readFileSync, realpathSync } from "node:fs";
import { hostname } from "node:os";
import { join } from "node:path";
import { makeDirs, nodeFs } from "../util/fs.js";
import { guardStoreRoot, storeRootGone } from "../util/persist.js";

/** Less free space than this at start is a full disk: nothing could be stored. */
export const MIN_FREE_BYTES = 1024 * 1024;
const PROBE = "nagare.probe.tmp";

export class StoreDirError extends Error {}

/**
 * Creates `dir` if needed and checks that it can hold a store: a directory,
 * writable (a file written, synced and removed), with at least MIN_FREE_BYTES free.
 */
export async function checkStoreDir(dir: string): Promise<void> {
  const fail = (why: string): StoreDirError => new StoreDirError(`store directory ${dir}: ${why}`);
  try {
    await makeDirs(dir);
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    throw fail(code === "EEXIST" || code === "ENOTDIR" ? "a file is in the way (not a directory)" : `cannot be created (${(err as Error).message})`);
  }
  if (!(await fsp.stat(dir)).isDirectory()) throw fail("not a directory");
  // nats-server's store (<dir>/jetstream/<account>/streams/...): nagare cannot read it, and would answer without its streams.
  const foreign = await natsServerStreams(dir);
  if (foreign !== null) throw fail(`holds nats-server's JetStream store (${foreign}), which nagare cannot read: it would start without those streams; move it away or choose another store directory`);
  const probe = join(dir, PROBE);
  try {
    const fh = await fsp.open(probe, "w", 0o644);
    try {
      await fh.writeFile(Buffer.alloc(4096));
      await fh.sync();
    } finally {
      await fh.close();
    }
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    throw fail(code === "ENOSPC" || code === "EDQUOT" ? "the disk is full" : `not writable (${(err as Error).message})`);
  } finally {
    await fsp.rm(probe, { force: true }).catch(() => undefined);
  }
  const st = await fsp.statfs(dir);
  const free = st.bavail * st.bsize;
  if (free < MIN_FREE_BYTES) throw fail(`the disk is full (${free} bytes free)`);
}

/** A streams directory of nats-server's layout under `dir` (jetstream/<account>/streams), or null. */
async function natsServerStreams(dir: string): Promise<string | null> {
  let accounts: string[];
  try {
    accounts = await fsp.readdir(join(dir, "jetstream"));
  } catch {
    return null;
  }
  for (const account of accounts) {
    const streams = join("jetstream", account, "streams");
    try {
      if ((await fsp.stat(join(dir, streams))).isDirectory()) return streams;
    } catch {
      // not one
    }
  }
  return null;
}

const LOCK_FILE = "nagare.lock";

interface Holder {
  pid: number;
  start: string;
  host: string;
}

/** Directories locked by servers in this process (several may be embedded in one). */
const heldHere = new Set<string>();

/** A process's fields from /proc/<pid>/stat after its command name (which is in parentheses and may hold spaces), or null where unknown. */
function statOf(pid: number): string[] | null {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
    return stat.slice(stat.lastIndexOf(")") + 2).split(" ");
  } catch {
    return null;
  }
}

/** This process's start time in clock ticks since boot (Linux), or "" where unknown. */
function startTimeOf(pid: number): string {
  // Field 22 of the whole line.
  return statOf(pid)?.[19] ?? "";
}

function alive(h: Holder): boolean {
  if (h.host !== hostname()) return true; // a shared filesystem: we cannot tell, so we do not take it
  try {
    process.kill(h.pid, 0);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === "ESRCH") return false;
  }
  const stat = statOf(h.pid);
  // Killed and not yet reaped by its parent (a zombie): it holds no file any more; a restart right after kill -9 may take over.
  if (stat?.[0] === "Z") return false;
  const start = stat?.[19] ?? "";
  return start === "" || h.start === "" || start === h.start;
}

export class StoreLockError extends Error {}

export interface StoreLock {
  release(): Promise<void>;
  /** Why the locked directory is no longer the one locked (removed, replaced while the server ran), or null. */
  gone(): string | null;
}

/** Takes the lock on `dir` (which must exist), or throws StoreLockError naming the holder. */
export async function lockStoreDir(dir: string): Promise<StoreLock> {
  const real = realpathSync(dir);
  const path = join(real, LOCK_FILE);
  const me: Holder = { pid: process.pid, start: startTimeOf(process.pid), host: hostname() };
  const inUse = (h: Holder): StoreLockError =>
    new StoreLockError(`store directory ${real} is in use by another nagare server (pid ${h.pid} on ${h.host}); stop it or choose another store directory`);
  if (heldHere.has(real)) throw inUse(me);
  for (let attempt = 0; attempt < 5; attempt++) {
    try {
      const fh = await fsp.open(path, "wx", 0o644);
      try {
        await fh.writeFile(JSON.stringify(me));
        await fh.sync();
      } finally {
        await fh.close();
      }
      heldHere.add(real);
      let released = false;
      // State files are not written into a store directory removed (rm -rf) or replaced under the running server.
      const identity = nodeFs.identity!(real);
      const unguard = identity === null ? () => undefined : guardStoreRoot(dir, identity);
      return {
        async release() {
          if (released) return;
          released = true;
          unguard();
          heldHere.delete(real);
          // Not the lock of a directory made anew at this path since.
          if (identity !== null && storeRootGone(real, identity) !== null) return;
          await fsp.rm(path, { force: true });
        },
        gone: () => (identity === null ? null : storeRootGone(real, identity)),
      };
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== "EEXIST") throw err;
    }
    let holder: Holder;
    try {
      holder = JSON.parse(await fsp.readFile(path, "utf8")) as Holder;
    } catch {
      // Being written this very moment, or a torn write by a holder killed while writing it.
      holder = { pid: 0, start: "", host: hostname() };
      if (attempt < 2) {
        await new Promise((r) => setTimeout(r, 20));
        continue;
      }
    }
    const mine = holder.pid === me.pid && holder.host === me.host && holder.start === me.start;
    if (!mine && holder.pid !== 0 && alive(holder)) throw inUse(holder);
    // The holder is gone: move its lock aside (only one taker can) and try again.
    try {
      await fsp.rename(path, `${path}.stale-${process.pid}`);
      await fsp.rm(`${path}.stale-${process.pid}`, { force: true });
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== "ENOENT") throw err;
    }
  }
  throw new StoreLockError(`could not lock store directory ${real}: its lock file keeps changing`);
}
