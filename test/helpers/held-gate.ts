/**
 * A replica gate (stream.ts `setReplicaGate`) whose replication the test
 * finishes by hand: writes wait in `waiting` until `finish` ends them, with
 * success (they count as replicated) or an error (the leadership or the
 * lease lost while they waited); with `refuseWith` set, writes are refused
 * before they are stored, as without a lease.
 */

import type { ApiError } from "../../src/streams/errors.js";
import type { ReplicaGate } from "../../src/streams/stream.js";

export class HeldGate implements ReplicaGate {
  highWatermark = 1;
  highWatermarkCurrent = true;
  readonly waiting: Array<{ seq: number; done: (err: ApiError | null) => void }> = [];
  replicated = 0;
  /** What a write is refused with before it is stored (a lost lease, say); none by default. */
  refuseWith: ApiError | null = null;
  /** Writes (and confirmations of writes already stored) refused so far. */
  refused = 0;
  refusal(_leaderOnly = false): ApiError | null {
    if (this.refuseWith !== null) this.refused++;
    return this.refuseWith;
  }
  replicate(lastSeq: number, done: (err: ApiError | null) => void): void {
    if (lastSeq <= this.replicated) return done(null);
    this.waiting.push({ seq: lastSeq, done });
  }
  ship(_lastSeq = 0): ApiError | null {
    return null;
  }
  removed(): void {}
  frontMoved(): void {}
  removedUnlisted(): void {}
  removedBelow(): void {}
  removalsReplicated(done: (err: ApiError | null) => void): void {
    done(null);
  }
  /** Ends the `n` oldest writes waiting (all of them by default). */
  finish(err: ApiError | null, n = this.waiting.length): void {
    for (const w of this.waiting.splice(0, n)) {
      if (err === null) this.replicated = Math.max(this.replicated, w.seq);
      w.done(err);
    }
  }
}
