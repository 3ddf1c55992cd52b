/** Small helpers for the cluster tests: bounded waits on promises and events, and a logger that keeps lines. */

import type { EventEmitter } from "node:events";
import type { Logger } from "../../src/util/log.js";

/** `p`, or a failure naming `what` after `ms`: every wait in a cluster test is bounded. */
export function within<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const limit = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`timed out after ${ms} ms waiting for ${what}`)), ms);
  });
  return Promise.race([p, limit]).finally(() => clearTimeout(timer));
}

/** The next `event` of `emitter` (its arguments), within `ms`. */
export function nextEvent<T extends unknown[] = unknown[]>(emitter: EventEmitter, event: string, ms: number): Promise<T> {
  return within(new Promise<T>((resolve) => emitter.once(event, (...args: unknown[]) => resolve(args as T))), ms, `"${event}"`);
}

/** A logger that keeps its lines (tests look for what was said), printing nothing. */
export function memoryLog(): Logger & { lines: string[] } {
  const lines: string[] = [];
  const keep = (level: string) => (msg: string) => void lines.push(`[${level}] ${msg}`);
  return { lines, info: keep("INF"), warn: keep("WRN"), error: keep("ERR"), debug: keep("DBG"), trace: () => {}, debugEnabled: true, traceEnabled: false };
}
