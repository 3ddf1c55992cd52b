/**
 * A stream's state as nats-server renders it in /jsz, with what the store
 * reports about damage (streams/damage.ts).
 */

import type { Stream } from "../streams/stream.js";
import { damageFields } from "../streams/damage.js";

/** nats-server's StreamState in stream sequences, as stream info renders it (Stream.renderState). */
export function streamState(stream: Stream): Promise<Record<string, unknown>> {
  return stream.renderState();
}

/** Every partition's counts and damage, for streams with more than one (Kafka topics); null otherwise. */
export function partitionStates(stream: Stream): Array<Record<string, unknown>> | null {
  if (stream.partitions.length < 2) return null;
  return stream.partitions.map((p, partition) => {
    const st = p.state();
    const out: Record<string, unknown> = { partition, messages: st.messages, bytes: st.bytes, first_seq: st.firstSeq, last_seq: st.lastSeq };
    if (st.deleted > 0) out.num_deleted = st.deleted;
    return Object.assign(out, damageFields(st));
  });
}
