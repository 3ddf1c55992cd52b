/**
 * A disk that stops answering: fdatasync of the files the real disk
 * (`nodeFs`) opens from now on whose path `matches` waits until `release()`.
 * `restore()` gives back the plain disk for files opened after it; syncs
 * already waiting wait for the release.
 */

import { nodeFs } from "../../src/util/fs.js";

export interface StalledSyncs {
  /** Syncs that have started waiting. */
  stalled(): number;
  release(): void;
  restore(): void;
}

export function stallSyncs(matches: (path: string) => boolean): StalledSyncs {
  const open = nodeFs.open;
  let release!: () => void;
  const gate = new Promise<void>((resolve) => (release = resolve));
  let stalled = 0;
  nodeFs.open = async (path, mode) => {
    const file = await open.call(nodeFs, path, mode);
    if (!matches(path)) return file;
    const datasync = file.datasync.bind(file);
    file.datasync = async () => {
      stalled++;
      await gate;
      return datasync();
    };
    return file;
  };
  return { stalled: () => stalled, release, restore: () => void (nodeFs.open = open) };
}
