/**
 * `/healthz`, with nats-server's options: `js-enabled-only` (and the older
 * `js-enabled`) asks only whether JetStream is on, `js-server-only` skips the
 * per-stream checks. Without them, every stream partition is checked: one
 * that refuses appends after a storage error (sticky until the stream is
 * reopened) makes the answer 503 `unavailable` naming it, as nats-server names
 * a stream that is not current; so does a stream whose files could not be
 * restored (it is not served), or whose stream order (order.map of a stream
 * with several partitions) failed. Lost messages do not: the stream still
 * serves, and /jsz and /metrics report the damage.
 */

import type { JetStream } from "../streams/jetstream.js";
import { json, type MonitorContext, type Reply } from "./context.js";
import { boolParam } from "./query.js";

export function healthz(ctx: MonitorContext, q: URLSearchParams): Reply {
  const enabledOnly = boolParam(q, "js-enabled-only") || boolParam(q, "js-enabled");
  const serverOnly = boolParam(q, "js-server-only");
  const jss = ctx.jetstreams;
  if (jss === undefined || enabledOnly) return json({ status: "ok" }, 200, true);
  // One stat: the store itself gone (rm -rf under the running server) fails every stream, and state files are refused.
  const storeGone = jss.storeDirGone();
  if (storeGone !== null) return json({ status: "unavailable", error: `JetStream ${storeGone}` }, 503, true);
  if (serverOnly) return json({ status: "ok" }, 200, true);
  for (const js of [...jss.all()].sort((a, b) => (a.account.name < b.account.name ? -1 : 1))) {
    const failure = firstStorageFailure(js);
    if (failure !== null) return json({ status: "unavailable", error: failure }, 503, true);
  }
  return json({ status: "ok" }, 200, true);
}

/** The first stream (by name) that could not be restored, or partition that refuses appends, described; null if none. */
function firstStorageFailure(js: JetStream): string | null {
  // Files it holds that it does not serve (a lost meta.json, a damaged stream order): not healthy until dealt with.
  const unserved = [...js.unloadable].sort((a, b) => (a[0] < b[0] ? -1 : 1))[0];
  if (unserved !== undefined) return `JetStream stream '${js.account.name} > ${unserved[0]}' could not be restored from its files: ${unserved[1]}`;
  for (const name of [...js.streams.keys()].sort()) {
    const stream = js.streams.get(name)!;
    // A stream with several partitions refuses publishes as well when its order (order.map) failed.
    const order = stream.order?.failure ?? null;
    if (order !== null) return `JetStream stream '${js.account.name} > ${name}' refuses publishes after a failure of its stream order: ${order.message}`;
    const partitions = stream.partitions;
    for (let p = 0; p < partitions.length; p++) {
      const error = partitions[p].state().error;
      if (error !== null) return `JetStream stream '${js.account.name} > ${name}' partition ${p} refuses appends after a storage error: ${error}`;
    }
  }
  return null;
}
