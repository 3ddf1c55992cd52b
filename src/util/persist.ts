/**
 * Small files (stream and consumer definitions, consumer state, Kafka group
 * offsets and transactions, as JSON) replaced so that a crash leaves either
 * the old or the new content. The write itself is fs.ts's writeFileDurably:
 * one copy of that sequence for the whole server.
 */

import { readFile, rm } from "node:fs/promises";
import { dirname, join } from "node:path";
import { nodeFs, writeFileDurably as replaceDurably } from "./fs.js";

export function writeJsonDurably(path: string, value: unknown): Promise<void> {
  return writeFileDurably(path, JSON.stringify(value));
}

/** Replaces `path` with `text` (creating its directory, durably, if needed). */
export async function writeFileDurably(path: string, text: string): Promise<void> {
  await nodeFs.mkdirp(dirname(path));
  await replaceDurably(nodeFs, path, Buffer.from(text));
}

export function syncDir(dir: string): Promise<void> {
  return nodeFs.syncDir(dir);
}

export async function readJson(path: string): Promise<unknown> {
  try {
    return JSON.parse(await readFile(path, "utf8"));
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === "ENOENT") return undefined;
    throw err;
  }
}

/** Removes a file, if there, so that the removal survives a crash. */
export async function removeFileDurably(path: string): Promise<void> {
  await nodeFs.remove(path);
  try {
    await syncDir(dirname(path));
  } catch (err) {
    // No directory: the file never was, and there is nothing to make durable.
    if ((err as NodeJS.ErrnoException).code !== "ENOENT") throw err;
  }
}

export async function removeDir(path: string): Promise<void> {
  await rm(path, { recursive: true, force: true });
  await syncDir(dirname(path)).catch(() => undefined);
}

/** Moves directory `from` to `to` (creating `to`'s parent), so that the move survives a crash: both parents synced. */
export async function moveDirDurably(from: string, to: string): Promise<void> {
  await nodeFs.mkdirp(dirname(to));
  await nodeFs.rename(from, to);
  await syncDir(dirname(from));
  await syncDir(dirname(to));
}

export function safeJoin(dir: string, name: string): string {
  return join(dir, encodeURIComponent(name));
}
