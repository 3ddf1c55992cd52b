import { appendFileSync } from "node:fs";

export interface Logger {
  info(msg: string): void;
  warn(msg: string): void;
  error(msg: string): void;
  debug(msg: string): void;
  trace(msg: string): void;
  readonly debugEnabled: boolean;
  readonly traceEnabled: boolean;
}

/** nats-server style lines: `[pid] time [INF] message`. */
export function createLogger(opts: { noLog: boolean; debug: boolean; trace: boolean; logFile?: string }): Logger {
  const write = (level: string, msg: string): void => {
    if (opts.noLog) return;
    const line = `[${process.pid}] ${new Date().toISOString().replace("T", " ").replace("Z", "")} [${level}] ${msg}\n`;
    if (opts.logFile) appendFileSync(opts.logFile, line);
    else process.stderr.write(line);
  };
  return {
    info: (m) => write("INF", m),
    warn: (m) => write("WRN", m),
    error: (m) => write("ERR", m),
    debug: (m) => {
      if (opts.debug) write("DBG", m);
    },
    trace: (m) => {
      if (opts.trace) write("TRC", m);
    },
    debugEnabled: opts.debug && !opts.noLog,
    traceEnabled: opts.trace && !opts.noLog,
  };
}
