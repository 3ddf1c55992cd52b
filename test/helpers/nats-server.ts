/**
 * Debian's nats-server (the reference), started for a side-by-side test on
 * a free port from a configuration text, and stopped by the test that
 * started it. `natsServerPath()` is null where it is not installed.
 */

import { spawn, type ChildProcess } from "node:child_process";
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { waitUntil } from "./clients.js";

export function natsServerPath(): string | null {
  for (const p of ["/usr/sbin/nats-server", "/usr/bin/nats-server"]) if (existsSync(p)) return p;
  return null;
}

export interface RunningNatsServer {
  port: number;
  stop(): Promise<void>;
}

/** Starts nats-server with `conf` (port and ports file added), once it has written its ports file. */
export async function startNatsServer(conf: string): Promise<RunningNatsServer> {
  const path = natsServerPath();
  if (path === null) throw new Error("nats-server is not installed");
  const dir = mkdtempSync(join(tmpdir(), "nagare-ref-"));
  const file = join(dir, "ref.conf");
  writeFileSync(file, `port: -1\nports_file_dir: "${dir}"\n${conf}\n`);
  const child: ChildProcess = spawn(path, ["-c", file], { stdio: ["ignore", "ignore", "pipe"] });
  let stderr = "";
  child.stderr!.on("data", (d: Buffer) => (stderr += d.toString()));
  let exited = false;
  const done = new Promise<void>((resolve) => child.once("exit", () => ((exited = true), resolve())));
  const stop = async (): Promise<void> => {
    if (!exited) child.kill("SIGTERM");
    await done;
    rmSync(dir, { recursive: true, force: true });
  };
  try {
    // nats-server creates the file, then writes it: a read in between finds it empty or cut short, so wait for whole JSON.
    let ports: { nats: string[] } | undefined;
    const read = (): boolean => {
      const name = readdirSync(dir).find((f) => f.endsWith(".ports"));
      if (name === undefined) return false;
      try {
        ports = JSON.parse(readFileSync(join(dir, name), "utf8")) as { nats: string[] };
        return true;
      } catch {
        return false;
      }
    };
    await waitUntil(() => exited || read(), "nats-server's ports file");
    if (exited || ports === undefined) throw new Error(`nats-server exited: ${stderr}`);
    return { port: Number(new URL(ports.nats[0]).port), stop };
  } catch (err) {
    await stop();
    throw err;
  }
}
