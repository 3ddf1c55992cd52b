/**
 * A follower's copy of its leader's consumers (stream-replicas.ts), kept on
 * disk as the follower's messages are. The leader confirms an ack (AckSync)
 * once every in-sync follower says it holds a copy with it; a follower
 * that kept that copy in memory only lost it with a restart, stayed in the
 * ISR (the leader that would have dropped it may be gone too), and could
 * take over with consumers older than acks the clients were told are
 * confirmed. So a copy is written, synced, before the follower tells its
 * leader it holds it, and read back whenever a role is taken without one
 * in memory (a start, a settle that failed).
 *
 * One file per stream directory, `consumers-copy.json`. A node that leads
 * has made the copy its own consumers and removes the file: left there, it
 * would be older than them at the next start. Writes and removals of one
 * file run one after the other, so a removal never precedes a write begun
 * before it, and a role that ends waits for them (`idle`).
 */

import { stat } from "node:fs/promises";
import { join } from "node:path";
import { nodeFs, writeFileDurably } from "../util/fs.js";
import { readJson, removeFileDurably, stateFileText } from "../util/persist.js";
import type { ConsumerCopy } from "./stream-move.js";

export const CONSUMER_COPY_FILE = "consumers-copy.json";

/** A copy as the follower holds it: the leader's stamp of it, its version within the leadership `run` (consumer-copies.ts). */
export interface HeldCopy {
  consumers: ConsumerCopy[];
  stamp: string | undefined;
  run: string | null;
  version: number;
}

interface Saved extends HeldCopy {
  /** The stream's creation time: a copy of another stream made under the name is not this one's. */
  stream: string;
}

export class ConsumerCopyFile {
  private tail: Promise<unknown> = Promise.resolve();
  /** Whether the file is there, as far as this process knows (undefined: not looked). */
  private present: boolean | undefined = undefined;
  private readonly path: string;

  /** @param created the stream's creation time, ISO */
  constructor(
    dir: string,
    private readonly created: string,
  ) {
    this.path = join(dir, CONSUMER_COPY_FILE);
  }

  /** Writes `copy` durably, after any write or removal under way, unless `current()` says by then that it is no longer wanted. */
  save(copy: HeldCopy, current: () => boolean): Promise<void> {
    return this.serial(async () => {
      if (!current()) return;
      const saved: Saved = { stream: this.created, ...copy };
      // Possibly there (a write failed part way) until it is removed.
      this.present = true;
      // Into the stream's directory as it is: not made again if the stream's removal took it.
      await writeFileDurably(nodeFs, this.path, Buffer.from(stateFileText(saved)));
    });
  }

  /** Resolves once the writes and removals asked for so far are done (failed or not). */
  idle(): Promise<void> {
    return this.tail.then(() => undefined);
  }

  remove(): Promise<void> {
    return this.serial(async () => {
      // Most streams never had one (a leader's, one not replicated): no directory sync for them.
      if (this.present === false) return;
      if (this.present === undefined && !(await exists(this.path))) {
        this.present = false;
        return;
      }
      await removeFileDurably(this.path);
      this.present = false;
    });
  }

  /** The copy written last; null when there is none. Throws when the file is damaged or is not such a copy. */
  load(): Promise<HeldCopy | null> {
    return this.serial(async () => {
      const v = (await readJson(this.path)) as Partial<Saved> | undefined;
      this.present = v !== undefined;
      if (v === undefined) return null;
      if (typeof v !== "object" || v === null || !Array.isArray(v.consumers) || !Number.isSafeInteger(v.version) || !v.consumers.every(isCopy)) {
        throw new Error(`${this.path} holds no copy of consumers`);
      }
      // Another stream made under the name since (its directory is new, so this is not expected): nothing of this one.
      if (v.stream !== this.created) return null;
      return { consumers: v.consumers, stamp: typeof v.stamp === "string" ? v.stamp : undefined, run: typeof v.run === "string" ? v.run : null, version: v.version! };
    });
  }

  private serial<T>(work: () => Promise<T>): Promise<T> {
    const next = this.tail.then(work, work);
    this.tail = next.catch(() => undefined);
    return next;
  }
}

function isCopy(c: unknown): c is ConsumerCopy {
  const x = c as Partial<ConsumerCopy> | null;
  return typeof x === "object" && x !== null && typeof x.name === "string" && typeof x.config === "object" && x.config !== null && typeof x.created === "string" && typeof x.state === "object" && x.state !== null && Array.isArray(x.state.pending);
}

async function exists(path: string): Promise<boolean> {
  try {
    await stat(path);
    return true;
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === "ENOENT") return false;
    throw err;
  }
}
