/**
 * kcat (Debian's, librdkafka) as the benchmarks run it: the producer
 * settings they share, the input file of 1 KiB records, and a run that
 * reports kcat's own CPU time. Shared by bench/kafka.ts (one node) and
 * bench/cluster.ts (three nodes against one).
 */

import { spawn } from "node:child_process";
import { closeSync, openSync, writeSync } from "node:fs";
import { join } from "node:path";

export const KCAT = "/usr/bin/kcat";

/** Value bytes per record: what "1 KiB records" means here (no key, no headers). */
export const RECORD = 1024;

/** Producer settings, recorded in the report. librdkafka's own defaults otherwise. */
export const KCAT_PRODUCE_ARGS = ["-X", "acks=all", "-X", "linger.ms=5", "-X", "batch.size=1000000"];

export interface Exit {
  code: number | null;
  stderr: string;
  /** kcat's user + system CPU seconds. */
  cpu: number;
}

/**
 * Runs kcat with stdin from `input` (a file) or nothing, stdout discarded.
 * Through bash, whose `times` reports the CPU its child used.
 */
export function kcat(args: string[], input: string | null): Promise<Exit> {
  return new Promise((res, rej) => {
    const fd = input === null ? "ignore" : openSync(input, "r");
    const script = `${KCAT} "$@"; rc=$?; echo "@@times" >&2; times >&2; exit $rc`;
    const child = spawn("bash", ["-c", script, "kcat", ...args], { stdio: [fd, "ignore", "pipe"] });
    if (typeof fd === "number") closeSync(fd);
    let stderr = "";
    child.stderr!.on("data", (d: Buffer) => (stderr += d.toString()));
    child.once("error", rej);
    child.once("close", (code) => {
      const at = stderr.lastIndexOf("@@times\n");
      const times = at < 0 ? "" : stderr.slice(at + 8);
      // `times`: the shell's user and system time, then its children's.
      const m = /(\d+)m([\d.]+)s (\d+)m([\d.]+)s\s*$/.exec(times.trim());
      const cpu = m === null ? NaN : Number(m[1]) * 60 + Number(m[2]) + Number(m[3]) * 60 + Number(m[4]);
      res({ code, stderr: at < 0 ? stderr : stderr.slice(0, at), cpu });
    });
  });
}

/** Input for kcat -P: `count` lines of RECORD printable bytes each, newline-delimited. */
const inputs = new Map<number, string>();
export function kcatInput(dir: string, count: number): string {
  const have = inputs.get(count);
  if (have !== undefined) return have;
  const line = Buffer.alloc(RECORD + 1);
  for (let i = 0; i < RECORD; i++) line[i] = 0x21 + ((i * 7) % 94);
  line[RECORD] = 0x0a;
  const file = join(dir, `kcat-input-${count}`);
  const fd = openSync(file, "w");
  const chunk = Buffer.concat(Array.from({ length: 1024 }, () => line));
  let left = count;
  while (left > 0) {
    const n = Math.min(left, 1024);
    writeSync(fd, chunk, 0, n * line.length);
    left -= n;
  }
  closeSync(fd);
  inputs.set(count, file);
  return file;
}

export function kcatVersion(): Promise<string> {
  return new Promise((res) => {
    const p = spawn(KCAT, ["-V"]);
    let out = "";
    p.stdout.on("data", (d: Buffer) => (out += d.toString()));
    p.on("close", () => {
      const m = /Version (\S+) .*librdkafka (\S+)/.exec(out);
      res(m === null ? "unknown" : `kcat ${m[1]}, librdkafka ${m[2]}`);
    });
  });
}
