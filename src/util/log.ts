/**
 * The server log, in nats-server's line format:
 *
 *   [4242] 2026/01/02 15:04:05.123456 [INF] Server is ready
 *
 * Logging never blocks the event loop and never grows without bound. A line
 * is queued and the queue is written by one `fs.write` at a time (a worker
 * thread does the waiting, whether the log is a file, a terminal or a pipe
 * nobody reads); lines queued meanwhile go out together in the next write.
 * When the queue is full, lines are dropped and counted, and once there is
 * room again a `[WRN]` line says how many went missing, where they went
 * missing. `close()` waits for the queue to be written (for a while: a
 * reader that never reads must not keep the process alive), and if the
 * process exits without it, what is still queued is written synchronously.
 *
 * Debug and trace lines are built only when enabled: callers on hot paths
 * test `traceEnabled` (a boolean) before building a string.
 */

import { closeSync, openSync, write, writeSync } from "node:fs";

export interface Logger {
  info(msg: string): void;
  warn(msg: string): void;
  error(msg: string): void;
  debug(msg: string): void;
  trace(msg: string): void;
  readonly debugEnabled: boolean;
  readonly traceEnabled: boolean;
}

/** The logger the server owns: it also reports its losses and is flushed and closed. */
export interface ServerLogger extends Logger {
  /** Lines dropped so far because the queue was full or a write failed. */
  readonly dropped: number;
  /** Characters queued or being written now (at most the queue's limit). */
  readonly queued: number;
  /** Resolves once everything logged so far is written (or could not be). */
  flush(): Promise<void>;
  /** Flushes (waiting at most `LOG_CLOSE_WAIT_MS`), then releases the log file. Later lines are dropped. */
  close(): Promise<void>;
}

/** Writes `data` (a whole batch of lines) and calls `done` once it is written. */
export type LogSink = (data: Buffer, done: (err: NodeJS.ErrnoException | null) => void) => void;

export interface LogOptions {
  noLog: boolean;
  debug: boolean;
  trace: boolean;
  /** Append to this file (opened now, so a bad path fails at startup); default stderr. */
  logFile?: string;
  /** Time on each line (default true), local unless `logtimeUtc`. */
  logtime?: boolean;
  logtimeUtc?: boolean;
  /** Limit of the queue in characters; default LOG_QUEUE_MAX. */
  maxQueued?: number;
  /** Where batches go instead of the file or stderr (tests). */
  sink?: LogSink;
}

/**
 * The queue's limit, in characters (about bytes: log lines are mostly ASCII).
 * 1 MiB absorbs a burst of several thousand trace lines while the writer
 * waits; more would only delay the moment a log that cannot keep up says so.
 */
export const LOG_QUEUE_MAX = 1024 * 1024;
/** How long close() waits for the queue to be written before giving up on it. */
export const LOG_CLOSE_WAIT_MS = 2000;
/** Retry delay when the descriptor is non-blocking and full (EAGAIN: a pipe nobody is reading). */
const RETRY_MS = 10;

const NO_LOG: ServerLogger = {
  info: () => {},
  warn: () => {},
  error: () => {},
  debug: () => {},
  trace: () => {},
  debugEnabled: false,
  traceEnabled: false,
  dropped: 0,
  queued: 0,
  flush: () => Promise.resolve(),
  close: () => Promise.resolve(),
};

export function createLogger(opts: LogOptions): ServerLogger {
  if (opts.noLog) return NO_LOG;
  const fd = opts.sink === undefined && opts.logFile !== undefined ? openLogFile(opts.logFile) : undefined;
  const sink = opts.sink ?? fdSink(fd ?? 2);
  const queue = new LineQueue(sink, opts.maxQueued ?? LOG_QUEUE_MAX, fd ?? (opts.sink === undefined ? 2 : undefined));
  const logtime = opts.logtime ?? true;
  const utc = opts.logtimeUtc ?? false;
  const prefix = `[${process.pid}] `;
  const line = (level: string, msg: string): string => `${prefix}${logtime ? timestamp(utc) + " " : ""}[${level}] ${msg}\n`;
  queue.format = (msg) => line("WRN", msg);
  const log: ServerLogger = {
    info: (m) => queue.push(line("INF", m)),
    warn: (m) => queue.push(line("WRN", m)),
    error: (m) => queue.push(line("ERR", m)),
    debug: opts.debug ? (m) => queue.push(line("DBG", m)) : () => {},
    trace: opts.trace ? (m) => queue.push(line("TRC", m)) : () => {},
    debugEnabled: opts.debug,
    traceEnabled: opts.trace,
    get dropped() {
      return queue.dropped;
    },
    get queued() {
      return queue.size;
    },
    flush: () => queue.flush(),
    close: async () => {
      await queue.close();
      if (fd !== undefined) {
        try {
          closeSync(fd);
        } catch {
          // already gone
        }
      }
    },
  };
  return log;
}

function openLogFile(path: string): number {
  try {
    return openSync(path, "a");
  } catch (err) {
    throw new Error(`cannot open log file ${path}: ${(err as NodeJS.ErrnoException).code ?? String(err)}`);
  }
}

/** Writes to a descriptor off the event loop, the whole buffer, waiting out EAGAIN. */
function fdSink(fd: number): LogSink {
  return (data, done) => {
    let at = 0;
    const step = (): void => {
      write(fd, data, at, data.length - at, null, (err, written) => {
        if (err && err.code === "EAGAIN") {
          setTimeout(step, RETRY_MS);
          return;
        }
        if (err) {
          done(err);
          return;
        }
        at += written;
        if (at < data.length) step();
        else done(null);
      });
    };
    step();
  };
}

/** Every queue not yet closed, for the synchronous write at exit. */
const open = new Set<LineQueue>();
let exitHookInstalled = false;

function installExitHook(): void {
  if (exitHookInstalled) return;
  exitHookInstalled = true;
  process.on("exit", () => {
    for (const q of open) q.writeRestSync();
  });
}

class LineQueue {
  private lines: string[] = [];
  /** Characters in `lines` plus those of the batch being written. */
  size = 0;
  private writing = 0;
  dropped = 0;
  /** Dropped since the last report. */
  private unreported = 0;
  private waiters: Array<() => void> = [];
  private closed = false;
  /** Formats the dropped-lines report as a [WRN] line. */
  format: (msg: string) => string = (m) => m + "\n";

  constructor(
    private readonly sink: LogSink,
    private readonly max: number,
    /** The descriptor the sink writes to, if any: what the exit hook writes to synchronously. */
    private readonly fd: number | undefined,
  ) {
    open.add(this);
    installExitHook();
  }

  push(line: string): void {
    if (this.closed) {
      this.dropped++;
      return;
    }
    if (this.unreported > 0) {
      // Room again after losses: say so where the gap is, before this line.
      const note = this.format(`logger: ${this.unreported} line${this.unreported === 1 ? "" : "s"} dropped: the log could not keep up`);
      if (this.size + note.length + line.length > this.max) {
        this.lose(1);
        return;
      }
      this.unreported = 0;
      this.add(note);
    } else if (this.size + line.length > this.max) {
      this.lose(1);
      return;
    }
    this.add(line);
  }

  private add(line: string): void {
    this.lines.push(line);
    this.size += line.length;
    if (this.writing === 0) this.writeNext();
  }

  private lose(n: number): void {
    this.dropped += n;
    this.unreported += n;
  }

  private writeNext(): void {
    if (this.lines.length === 0) {
      if (this.unreported > 0 && !this.closed) {
        // The losses were the last thing: report them now rather than with the next line.
        const note = this.format(`logger: ${this.unreported} line${this.unreported === 1 ? "" : "s"} dropped: the log could not keep up`);
        this.unreported = 0;
        this.lines.push(note);
        this.size += note.length;
      } else {
        const waiters = this.waiters;
        this.waiters = [];
        for (const w of waiters) w();
        return;
      }
    }
    const batch = this.lines;
    this.lines = [];
    const chars = batch.reduce((n, l) => n + l.length, 0);
    this.writing = batch.length;
    this.sink(Buffer.from(batch.join(""), "utf8"), (err) => {
      if (err) this.lose(this.writing);
      this.writing = 0;
      this.size -= chars;
      this.writeNext();
    });
  }

  flush(): Promise<void> {
    if (this.writing === 0 && this.lines.length === 0) return Promise.resolve();
    return new Promise((resolve) => this.waiters.push(resolve));
  }

  async close(): Promise<void> {
    if (this.closed) return;
    let timer: NodeJS.Timeout | undefined;
    const timeout = new Promise<void>((resolve) => {
      timer = setTimeout(resolve, LOG_CLOSE_WAIT_MS);
    });
    await Promise.race([this.flush(), timeout]);
    clearTimeout(timer);
    this.closed = true;
    open.delete(this);
    const stuck = this.lines.length + this.writing;
    if (stuck > 0) this.dropped += stuck;
  }

  /** At exit, where nothing asynchronous runs any more: the lines not yet handed to a write. */
  writeRestSync(): void {
    if (this.fd === undefined || this.lines.length === 0) return;
    const data = Buffer.from(this.lines.join(""), "utf8");
    this.lines = [];
    try {
      let at = 0;
      while (at < data.length) at += writeSync(this.fd, data, at, data.length - at);
    } catch {
      // EAGAIN on a full non-blocking pipe, or the descriptor is gone: nothing more can be done
    }
  }
}

/** nats-server's log time: `2006/01/02 15:04:05.000000`, local or UTC. */
function timestamp(utc: boolean): string {
  const nowMs = performance.timeOrigin + performance.now();
  const d = new Date(Math.floor(nowMs));
  const micros = Math.floor(nowMs * 1000) % 1_000_000;
  const [y, mo, day, h, mi, s] = utc
    ? [d.getUTCFullYear(), d.getUTCMonth() + 1, d.getUTCDate(), d.getUTCHours(), d.getUTCMinutes(), d.getUTCSeconds()]
    : [d.getFullYear(), d.getMonth() + 1, d.getDate(), d.getHours(), d.getMinutes(), d.getSeconds()];
  return `${y}/${two(mo)}/${two(day)} ${two(h)}:${two(mi)}:${two(s)}.${String(micros).padStart(6, "0")}`;
}

function two(n: number): string {
  return n < 10 ? `0${n}` : String(n);
}
