/** Damaging files the way a disk does, for the storage tests. */

import { closeSync, openSync, readSync, writeSync } from "node:fs";

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
