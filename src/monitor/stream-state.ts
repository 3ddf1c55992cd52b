/**
 * A stream's state as nats-server renders it in /jsz, with what the store
 * reports about damage (streams/damage.ts).
 */

import { isoTime, type Stream } from "../streams/stream.js";
import { damageFields } from "../streams/damage.js";

/**
 * nats-server's StreamState for partition 0 (the sequence space JetStream
 * clients address), read from memory except the first and last message times.
 */
export async function streamState(stream: Stream): Promise<Record<string, unknown>> {
  const st = await stream.state();
  const state: Record<string, unknown> = {
    messages: st.messages,
    bytes: st.bytes,
    first_seq: st.firstSeq,
    first_ts: isoTime(st.firstTime),
    last_seq: st.lastSeq,
    last_ts: isoTime(st.lastTime),
  };
  if (st.subjects > 0) state.num_subjects = st.subjects;
  if (st.deleted > 0) state.num_deleted = st.deleted;
  Object.assign(state, damageFields(st));
  state.consumer_count = stream.consumers.size;
  return state;
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
