/**
 * Small files (stream and consumer definitions, consumer state, as JSON)
 * written so that a crash leaves either the old or the new content: temp
 * file, fsync, rename, fsync of the directory.
 */

import { open, rename, mkdir, readFile, rm } from "node:fs/promises";
import { dirname, join } from "node:path";

export function writeJsonDurably(path: string, value: unknown, sync = true): Promise<void> {
  return writeFileDurably(path, JSON.stringify(value), sync);
}

/** Replaces `path` with `text` so that a crash leaves the old or the new file. */
export async function writeFileDurably(path: string, text: string, sync = true): Promise<void> {
  const tmp = `${path}.tmp`;
  await mkdir(dirname(path), { recursive: true });
  const fh = await open(tmp, "w");
  try {
    await fh.writeFile(text);
    if (sync) await fh.datasync();
  } finally {
    await fh.close();
  }
  await rename(tmp, path);
  if (sync) await syncDir(dirname(path));
}

export async function syncDir(dir: string): Promise<void> {
  const d = await open(dir, "r");
  try {
    await d.sync();
  } finally {
    await d.close();
  }
}

export async function readJson(path: string): Promise<unknown> {
  try {
    return JSON.parse(await readFile(path, "utf8"));
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === "ENOENT") return undefined;
    throw err;
  }
}

export async function removeDir(path: string): Promise<void> {
  await rm(path, { recursive: true, force: true });
  await syncDir(dirname(path)).catch(() => undefined);
}

export function safeJoin(dir: string, name: string): string {
  return join(dir, encodeURIComponent(name));
}
