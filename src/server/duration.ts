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
