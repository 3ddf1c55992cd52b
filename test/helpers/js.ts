/** A JetStream-enabled server in a temporary store directory, and small helpers around the v3 clients. */

import { spawn, type ChildProcess } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import { fileURLToPath } from "node:url";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { connect, createInbox, type NatsConnection } from "@nats-io/transport-node";
import { JetStreamApiError } from "@nats-io/jetstream";
import { startServer, type NagareServer, type ServerOptions } from "../../src/index.js";

const CLI = fileURLToPath(new URL("../../src/cli/main.js", import.meta.url));

export interface JsHarness {
  srv: NagareServer;
  nc: NatsConnection;
  storeDir: string;
  /**
   * Stops the server (keeping the store) and starts it again on the same
   * directory; `keepKafkaPort`: its Kafka listener on the port it had, so
   * that Kafka clients find it again as they would a restarted broker;
   * `whileStopped` runs between the stop and the start (to alter the store).
   */
  restart(opts?: { keepKafkaPort?: boolean; whileStopped?: () => void }): Promise<void>;
  close(): Promise<void>;
}

/** `server` adds options (a Kafka listener, say) to the JetStream server. */
export async function startJs(opts: { storeDir?: string; server?: ServerOptions } = {}): Promise<JsHarness> {
  const storeDir = opts.storeDir ?? mkdtempSync(join(tmpdir(), "nagare-js-"));
  const options: ServerOptions = { ...opts.server, port: 0, jetstream: true, storeDir };
  const h: JsHarness = {
    srv: await startServer(options),
    nc: undefined as unknown as NatsConnection,
    storeDir,
    async restart(how = {}) {
      const kafkaPort = h.srv.kafkaPort;
      await h.nc.close();
      await h.srv.close();
      how.whileStopped?.();
      const again = how.keepKafkaPort === true && options.kafka !== undefined && kafkaPort !== undefined ? { ...options, kafka: { ...options.kafka, port: kafkaPort } } : options;
      h.srv = await startServer(again);
      h.nc = await connect({ servers: h.srv.url });
    },
    async close() {
      await h.nc.close();
      await h.srv.close();
      rmSync(storeDir, { recursive: true, force: true });
    },
  };
  h.nc = await connect({ servers: h.srv.url });
  return h;
}

/** The JetStream err_code of a rejected promise. */
export async function apiErrorCode(p: Promise<unknown>): Promise<number> {
  try {
    await p;
  } catch (err) {
    if (err instanceof JetStreamApiError) return err.code;
    const cause = (err as { cause?: unknown }).cause;
    if (cause instanceof JetStreamApiError) return cause.code;
    throw err;
  }
  throw new Error("expected a JetStream API error, the call succeeded");
}

/** A raw API request: the decoded JSON answer. */
export async function api(nc: NatsConnection, subject: string, body: unknown = ""): Promise<Record<string, unknown>> {
  const payload = typeof body === "string" ? body : JSON.stringify(body);
  const m = await nc.request(subject, payload, { timeout: 5000 });
  return JSON.parse(m.string()) as Record<string, unknown>;
}

/** A delivery or a status (a header-only message with a code) as a raw pull request sees it. */
export interface PullAnswer {
  subject: string;
  reply: string;
  size: number;
  status?: { code: number; description: string; headers: Record<string, string> };
}

/**
 * Sends one raw MSG.NEXT request and collects what comes back until a status
 * ends it (or `ms` passes): what the official clients hide.
 */
export async function rawPull(nc: NatsConnection, stream: string, consumer: string, body: string, ms = 3000): Promise<PullAnswer[]> {
  const inbox = createInbox();
  const sub = nc.subscribe(inbox);
  const out: PullAnswer[] = [];
  const done = (async () => {
    for await (const m of sub) {
      const a: PullAnswer = { subject: m.subject, reply: m.reply ?? "", size: m.data.length };
      const h = m.headers;
      if (h !== undefined && h.code !== 0 && m.data.length === 0) {
        const headers: Record<string, string> = {};
        for (const k of h.keys()) headers[k] = h.get(k);
        a.status = { code: h.code, description: h.description, headers };
      }
      out.push(a);
      if (a.status !== undefined && a.status.code !== 100) break;
    }
  })();
  nc.publish(`$JS.API.CONSUMER.MSG.NEXT.${stream}.${consumer}`, body, { reply: inbox });
  const timer = setTimeout(() => sub.unsubscribe(), ms);
  await done;
  clearTimeout(timer);
  sub.unsubscribe();
  return out;
}

/**
 * Runs `nagare server -js` (plus `args`) in its own process on a free port,
 * once it says it is ready: for a kill -9, and for timing measurements the
 * client's event loop must not share.
 */
export async function spawnServer(storeDir: string, args: string[] = [], nofile?: number): Promise<{ child: ChildProcess; url: string }> {
  const argv = [CLI, "server", "-a", "127.0.0.1", "-p", "-1", "-js", "-sd", storeDir, ...args];
  // `nofile`: the descriptor limit (ulimit -n) the server runs under.
  const child =
    nofile === undefined
      ? spawn(process.execPath, argv, { stdio: ["ignore", "pipe", "pipe"] })
      : spawn("sh", ["-c", `ulimit -n ${nofile} && exec "$0" "$@"`, process.execPath, ...argv], { stdio: ["ignore", "pipe", "pipe"] });
  let log = "";
  const url = await new Promise<string>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`server did not start: ${log}`)), 20_000);
    const onData = (d: Buffer): void => {
      log += d.toString();
      const m = /Listening for client connections on ([\d.]+):(\d+)/.exec(log);
      if (m && /Server is ready/.test(log)) {
        clearTimeout(timer);
        resolve(`nats://${m[1]}:${m[2]}`);
      }
    };
    child.stdout!.on("data", onData);
    child.stderr!.on("data", onData);
    child.once("exit", (code) => {
      clearTimeout(timer);
      reject(new Error(`server exited with ${code}: ${log}`));
    });
  });
  return { child, url };
}

/** Runs `nagare server -js` on `storeDir` expecting it to refuse to start: its exit code and output. */
export async function refusedServer(storeDir: string): Promise<{ code: number | null; output: string }> {
  const child = spawn(process.execPath, [CLI, "server", "-a", "127.0.0.1", "-p", "-1", "-js", "-sd", storeDir], { stdio: ["ignore", "pipe", "pipe"] });
  let output = "";
  child.stdout!.on("data", (d: Buffer) => (output += d.toString()));
  child.stderr!.on("data", (d: Buffer) => (output += d.toString()));
  const timer = setTimeout(() => child.kill("SIGKILL"), 20_000);
  const code = await new Promise<number | null>((resolve) => child.once("exit", (c) => resolve(c)));
  clearTimeout(timer);
  return { code, output };
}
