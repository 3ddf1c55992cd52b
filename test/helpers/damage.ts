/** Damaging files the way a disk does, for the storage tests. */

import { closeSync, openSync, readdirSync, readSync, writeSync } from "node:fs";
import { join } from "node:path";

/** XORs the byte at `at` of the file at `path` with `mask` (one flipped bit by default). */
export function flipByte(path: string, at: number, mask = 0x10): void {
  const fd = openSync(path, "r+");
  try {
    const b = Buffer.alloc(1);
    readSync(fd, b, 0, 1, at);
    b[0] ^= mask;
    writeSync(fd, b, 0, 1, at);
  } finally {
    closeSync(fd);
  }
}

/** The first file named `name` under `dir`, depth first (a state file the tests damage or read). */
export function findFile(dir: string, name: string): string | undefined {
  for (const e of readdirSync(dir, { withFileTypes: true })) {
    const path = join(dir, e.name);
    if (e.isFile() && e.name === name) return path;
    if (e.isDirectory()) {
      const found = findFile(path, name);
      if (found !== undefined) return found;
    }
  }
  return undefined;
}
