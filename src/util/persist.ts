/**
 * Small files (stream and consumer definitions, consumer state, Kafka group
 * offsets and transactions, as JSON) replaced so that a crash leaves either
 * the old or the new content. The write itself is fs.ts's writeFileDurably:
 * one copy of that sequence for the whole server.
 *
 * Each ends with a line holding its JSON's CRC-32C: a flipped bit that
 * still parses (a committed offset's digit) is found and reported as damage
 * instead of being read as the value. A file without that line (written
 * before it existed) is read as it is.
 */

import { createHash } from "node:crypto";
import { readFile, rm } from "node:fs/promises";
import { realpathSync } from "node:fs";
import { basename, dirname, join, resolve, sep } from "node:path";
import { crc32c } from "./crc32c.js";
import { nodeFs, writeFileDurably as replaceDurably } from "./fs.js";

/** Starts the checksum line. JSON.stringify never writes a raw newline, so the last one found is this. */
const CHECKSUM_LINE = "\n#crc32c ";

/** `createDir: false`: the file's directory must be there already (it was made with the thing the file belongs to). */
export function writeJsonDurably(path: string, value: unknown, opts: { createDir?: boolean } = {}): Promise<void> {
  return writeFileDurably(path, stateFileText(value), opts);
}

/** A state file's text: the value's JSON, then its checksum line. */
export function stateFileText(value: unknown): string {
  const json = JSON.stringify(value);
  return `${json}${CHECKSUM_LINE}${checksumOf(json)}\n`;
}

/** The value a state file holds; throws when it is damaged (its checksum does not match, or it is no JSON). */
export function parseStateFile(text: string): unknown {
  const at = text.lastIndexOf(CHECKSUM_LINE);
  // Written before checksums: a damaged one fails to parse, or is read as it is, as then.
  if (at < 0) return JSON.parse(text);
  const json = text.slice(0, at);
  if (text.slice(at + CHECKSUM_LINE.length) !== `${checksumOf(json)}\n`) throw new Error("its checksum does not match its content: the file is damaged");
  return JSON.parse(json);
}

function checksumOf(json: string): string {
  return (crc32c(Buffer.from(json)) >>> 0).toString(16).padStart(8, "0");
}

/** Replaces `path` with `text` (creating its directory, durably, if needed and not told otherwise). */
export async function writeFileDurably(path: string, text: string, opts: { createDir?: boolean } = {}): Promise<void> {
  checkStoreRoots(path);
  if (opts.createDir !== false) await nodeFs.mkdirp(dirname(path));
  await replaceDurably(nodeFs, path, Buffer.from(text));
}

/**
 * Store directories of the servers running in this process, by path, with
 * the directory each locked ("device:inode"). A state file (consumer state,
 * Kafka offsets, definitions) is not written under one that was removed or
 * replaced since: the write would make the directories again and succeed,
 * acknowledging what sits beside nothing it belongs to.
 */
const storeRoots = new Map<string, string>();

/** Guards the store directory `dir` (as given and as resolved) until the returned function is called. */
export function guardStoreRoot(dir: string, identity: string): () => void {
  const paths = [...new Set([resolve(dir), realpathOr(dir)])];
  for (const p of paths) storeRoots.set(p, identity);
  return () => {
    for (const p of paths) if (storeRoots.get(p) === identity) storeRoots.delete(p);
  };
}

function realpathOr(dir: string): string {
  try {
    return realpathSync(dir);
  } catch {
    return resolve(dir);
  }
}

/** A store directory that is no longer the one its server locked, described, or null. */
export function storeRootGone(root: string, identity: string): string | null {
  const now = nodeFs.identity!(root);
  if (now === identity) return null;
  return `store directory ${root} ${now === null ? "was removed" : "was replaced by another directory"} while the server ran: what it held (streams, consumers, offsets) is not there any more`;
}

/** Throws if `path` lies in a guarded store directory that was removed or replaced. One stat per state file written. */
function checkStoreRoots(path: string): void {
  if (storeRoots.size === 0) return;
  const abs = resolve(path);
  for (const [root, identity] of storeRoots) {
    if (!abs.startsWith(root + sep)) continue;
    const gone = storeRootGone(root, identity);
    if (gone !== null) throw Object.assign(new Error(`${path} not written: ${gone}`), { code: "ENOENT" });
  }
}

export function syncDir(dir: string): Promise<void> {
  return nodeFs.syncDir(dir);
}

/** The value of a state file written by writeJsonDurably; undefined when there is none; throws when it is damaged. */
export async function readJson(path: string): Promise<unknown> {
  let text: string;
  try {
    text = await readFile(path, "utf8");
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === "ENOENT") return undefined;
    throw err;
  }
  try {
    return parseStateFile(text);
  } catch (err) {
    throw new DamagedStateFile(path, (err as Error).message);
  }
}

/** A state file whose content is not what was written: its checksum does not match, or it is no JSON. */
export class DamagedStateFile extends Error {
  constructor(
    readonly path: string,
    readonly why: string,
  ) {
    super(`${path}: ${why}`);
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

/** What a directory being removed is renamed to first: a crash mid-removal leaves a name that says so, never a half-gone store. */
export const REMOVING_PREFIX = ".removing-";

/**
 * Removes a stream's or consumer's directory so that a crash part way
 * leaves no half-removed one to be read back: renamed (durably) to
 * `REMOVING_PREFIX` + its name, then removed. What a crash leaves under
 * that name is removed at the next load.
 */
export async function removeDirAtomically(path: string): Promise<void> {
  const doomed = join(dirname(path), REMOVING_PREFIX + fitted(basename(path), REMOVING_PREFIX.length));
  await rm(doomed, { recursive: true, force: true });
  try {
    await nodeFs.rename(path, doomed);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === "ENOENT") return;
    throw err;
  }
  await syncDir(dirname(path));
  await removeDir(doomed);
}

/** Moves directory `from` to `to` (creating `to`'s parent), so that the move survives a crash: both parents synced. */
export async function moveDirDurably(from: string, to: string): Promise<void> {
  await nodeFs.mkdirp(dirname(to));
  await nodeFs.rename(from, to);
  await syncDir(dirname(from));
  await syncDir(dirname(to));
}

export function safeJoin(dir: string, name: string): string {
  return join(dir, storedName(name));
}

/** The longest file name Linux filesystems take (ext4, xfs, btrfs, tmpfs: 255 bytes). */
const NAME_MAX = 255;
/** Starts a stored name made of a hash: `%` followed by anything but two hex digits is no escaped name's. */
const HASHED_PREFIX = "%~";

/**
 * A name (a stream's, a consumer's, a Kafka group's) as a file name that
 * leaves `room` bytes for what is added to it (`.json.tmp`, a prefix):
 * escaped, so that no name is a path; and when that is too long for the
 * filesystem, its SHA-256 instead (its owner's name is inside the file).
 * Names that fitted before keep the file name they had.
 */
export function storedName(name: string, room = 0): string {
  const encoded = encodeURIComponent(name);
  // encodeURIComponent keeps dots: "." and ".." would name the directory itself and its parent (an account named ".."
  // had the default account's store directory, and after a restart its users read and changed the default account's
  // streams). Escaped, as nameOfStored reads them back.
  const safe = encoded === "." || encoded === ".." ? encoded.replace(/\./g, "%2E") : encoded;
  return fitted(safe, room);
}

/** A file name as it is when it fits beside `room` more bytes, else its SHA-256 (see storedName). */
function fitted(fileName: string, room: number): string {
  if (Buffer.byteLength(fileName) + room <= NAME_MAX) return fileName;
  return `${HASHED_PREFIX}${createHash("sha256").update(fileName).digest("hex")}`;
}

/** Whether a stored name is a hash (storedName): the name it stands for is only in the file. */
export function isHashedName(fileName: string): boolean {
  return fileName.startsWith(HASHED_PREFIX);
}

/** The name a stored name stands for, for messages: a hashed one is shown as it is. */
export function nameOfStored(fileName: string): string {
  try {
    return decodeURIComponent(fileName);
  } catch {
    return fileName;
  }
}
