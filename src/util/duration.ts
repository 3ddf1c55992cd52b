/** Go-style compact durations (`1d2h3m4s`) as nats-server shows uptime and idle times. */
export function formatDuration(ms: number): string {
  let s = Math.floor(Math.max(0, ms) / 1000);
  const d = Math.floor(s / 86400);
  s %= 86400;
  const h = Math.floor(s / 3600);
  s %= 3600;
  const m = Math.floor(s / 60);
  s %= 60;
  return `${d ? d + "d" : ""}${h ? h + "h" : ""}${m ? m + "m" : ""}${s}s`;
}

/** A duration in nanoseconds as Go's time.Duration prints it (`250ms`, `5s`, `1m30s`, `2h0m0s`): the form nats-server's error texts use. */
export function goDuration(ns: number): string {
  if (ns === 0) return "0s";
  const sign = ns < 0 ? "-" : "";
  const n = Math.abs(ns);
  if (n < 1_000) return `${sign}${n}ns`;
  if (n < 1_000_000) return `${sign}${n / 1_000}µs`;
  if (n < 1_000_000_000) return `${sign}${n / 1_000_000}ms`;
  const h = Math.floor(n / 3_600_000_000_000);
  const m = Math.floor((n % 3_600_000_000_000) / 60_000_000_000);
  const s = `${(n % 60_000_000_000) / 1_000_000_000}s`;
  return sign + (h > 0 ? `${h}h${m}m${s}` : m > 0 ? `${m}m${s}` : s);
}
