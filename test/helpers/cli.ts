/** Runs CLI commands: in-process with captured output, or as a child process. */

import { spawn } from "node:child_process";
import { PassThrough } from "node:stream";
import { fileURLToPath } from "node:url";
import type { ClientCommandIo } from "../../src/cli/client-commands.js";

export interface CommandRun {
  code: number;
  out: string;
  err: string;
}

export async function captured(command: (io: ClientCommandIo) => Promise<number>): Promise<CommandRun> {
  const stdout = new PassThrough();
  const stderr = new PassThrough();
  let out = "";
  let err = "";
  stdout.on("data", (d: Buffer) => (out += d.toString()));
  stderr.on("data", (d: Buffer) => (err += d.toString()));
  const code = await command({ stdout, stderr, stdin: new PassThrough() });
  return { code, out, err };
}

export interface ProcessRun {
  code: number | null;
  stdout: string;
  stderr: string;
  /** Milliseconds from spawn to exit. */
  ms: number;
}

export const MAIN = fileURLToPath(new URL("../../src/cli/main.js", import.meta.url));

/**
 * Runs `nagare <args>` as a child process, as a user would. `until`: once
 * stderr matches, send `signal` (default SIGTERM). The child is killed, and
 * the promise rejected, if it has not exited after `limitMs`: a command that
 * hangs fails the test instead of hanging it.
 */
export function runNagare(
  args: string[],
  opts: { until?: RegExp; signal?: NodeJS.Signals; limitMs?: number; env?: NodeJS.ProcessEnv } = {},
): Promise<ProcessRun> {
  return new Promise((resolve, reject) => {
    const started = Date.now();
    const child = spawn(process.execPath, [MAIN, ...args], { stdio: ["ignore", "pipe", "pipe"], env: opts.env ?? process.env });
    let stdout = "";
    let stderr = "";
    let signalled = false;
    const limitMs = opts.limitMs ?? 10_000;
    const timer = setTimeout(() => {
      child.kill("SIGKILL");
      reject(new Error(`nagare ${args.join(" ")} still running after ${limitMs} ms; stderr: ${stderr}`));
    }, limitMs);
    child.stdout.on("data", (d: Buffer) => (stdout += d.toString()));
    child.stderr.on("data", (d: Buffer) => {
      stderr += d.toString();
      if (opts.until && !signalled && opts.until.test(stderr)) {
        signalled = true;
        child.kill(opts.signal ?? "SIGTERM");
      }
    });
    child.on("close", (code) => {
      clearTimeout(timer);
      resolve({ code, stdout, stderr, ms: Date.now() - started });
    });
  });
}
