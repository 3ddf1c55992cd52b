/**
 * npm's `prepare`: builds dist/ after `npm ci` and for git installs, but only
 * when a source is newer than the last build. `npx nagare` run inside the
 * checkout installs the checkout into npm's cache and runs `prepare` each
 * time it does (a fresh cache, another user): a full tsc there took 30 s on
 * a busy 2-core machine, for a dist/ that was already up to date.
 */

import { execFileSync } from "node:child_process";
import { existsSync, readdirSync, statSync, writeFileSync } from "node:fs";
import { createRequire } from "node:module";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

const root = join(dirname(fileURLToPath(import.meta.url)), "..");
const stamp = join(root, "dist", ".built");

/** Newest modification time among the build's inputs. */
function newestInput() {
  let newest = Math.max(statSync(join(root, "tsconfig.json")).mtimeMs, statSync(join(root, "package.json")).mtimeMs);
  const walk = (dir) => {
    for (const e of readdirSync(dir, { withFileTypes: true })) {
      const p = join(dir, e.name);
      if (e.isDirectory()) walk(p);
      else if (e.name.endsWith(".ts")) newest = Math.max(newest, statSync(p).mtimeMs);
    }
  };
  for (const d of ["src", "test", "bench"]) if (existsSync(join(root, d))) walk(join(root, d));
  return newest;
}

if (existsSync(stamp) && statSync(stamp).mtimeMs >= newestInput()) process.exit(0);
const tsc = createRequire(import.meta.url).resolve("typescript/bin/tsc");
execFileSync(process.execPath, [tsc, "-p", join(root, "tsconfig.json")], { stdio: "inherit" });
writeFileSync(stamp, "");
