/**
 * The layers of docs/ARCHITECTURE.md hold: every relative import in src/
 * goes to the importing file's own folder or to one its row of the layer
 * table allows. The table is the rule; this test reads it.
 */

import { test } from "node:test";
import assert from "node:assert/strict";
import { readdirSync, readFileSync, statSync } from "node:fs";
import { dirname, join, normalize, relative } from "node:path";
import { fileURLToPath } from "node:url";

const repo = join(dirname(fileURLToPath(import.meta.url)), "..", "..");
const src = join(repo, "src");

/** Folder (or file) → what it may import; "*" for everything. */
function layerTable(): Map<string, string[] | "*"> {
  const doc = readFileSync(join(repo, "docs", "ARCHITECTURE.md"), "utf8");
  const section = doc.slice(doc.indexOf("## Layers"), doc.indexOf("\n## ", doc.indexOf("## Layers") + 3));
  const rows = new Map<string, string[] | "*">();
  for (const line of section.split("\n")) {
    if (!line.startsWith("| `")) continue;
    const cells = line.split("|").map((c) => c.trim());
    const key = /`([^`]+)`/.exec(cells[1])![1];
    const may = cells[cells.length - 2];
    rows.set(key, may === "everything" ? "*" : [...may.matchAll(/`([^`]+\/)`/g)].map((m) => m[1]));
  }
  return rows;
}

function sources(dir: string): string[] {
  const out: string[] = [];
  for (const name of readdirSync(dir)) {
    const p = join(dir, name);
    if (statSync(p).isDirectory()) out.push(...sources(p));
    else if (name.endsWith(".ts")) out.push(p);
  }
  return out;
}

/** The table's key for a path under src/: the longest folder that contains it, or the file itself. */
function layerOf(rows: Map<string, unknown>, path: string): string | undefined {
  let best: string | undefined;
  for (const key of rows.keys()) {
    const hit = key.endsWith("/") ? path.startsWith(key) : path === key;
    if (hit && (best === undefined || key.length > best.length)) best = key;
  }
  return best;
}

test("every import in src/ is one the layer table in docs/ARCHITECTURE.md allows", () => {
  const rows = layerTable();
  assert.ok(rows.size >= 10, "the layer table was found");
  const wrong: string[] = [];
  for (const file of sources(src)) {
    const from = relative(src, file);
    const layer = layerOf(rows, from);
    if (layer === undefined) {
      wrong.push(`${from}: in no layer of the table`);
      continue;
    }
    const allowed = rows.get(layer)!;
    const text = readFileSync(file, "utf8");
    for (const m of text.matchAll(/(?:from|import)\s*\(?\s*"(\.{1,2}\/[^"]+)"/g)) {
      const target = normalize(join(dirname(from), m[1])).replace(/\.js$/, ".ts");
      const to = layerOf(rows, target);
      if (to === layer || allowed === "*") continue;
      if (to === undefined || !allowed.includes(to)) wrong.push(`${from} imports ${target} (${to ?? "no layer"}), which ${layer} may not`);
    }
  }
  assert.deepEqual(wrong, []);
});

test("the check catches a forbidden import", () => {
  const rows = layerTable();
  assert.equal(layerOf(rows, "store/file-log.ts"), "store/");
  assert.equal(layerOf(rows, "protocols/kafka/door.ts"), "protocols/kafka/");
  assert.equal(layerOf(rows, "index.ts"), "index.ts");
  const store = rows.get("store/") as string[];
  assert.ok(!store.includes("streams/") && !store.includes("protocols/kafka/") && !store.includes("server/"), "the store may import no layer above it");
  assert.ok(!(rows.get("core/") as string[]).some((l) => l.startsWith("protocols/")), "the core imports no door");
});
