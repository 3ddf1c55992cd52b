/** Runs a CLI command in-process with captured output, as the CLI tests need. */

import { PassThrough } from "node:stream";
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
