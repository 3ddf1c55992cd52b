/**
 * The interface every message log implements (file-backed and memory-only):
 * one append-only, densely sequenced log per stream partition. Streams and
 * doors depend on this, never on a concrete store.
 */

export interface AppendInput {
  subject: string;
  data: Uint8Array;
  headers?: Uint8Array | null;
  key?: Uint8Array | null;
}

export interface StoredMessage {
  seq: number;
  /** Milliseconds since the epoch, assigned by the log, never decreasing. */
  time: number;
  subject: string;
  headers: Buffer | null;
  key: Buffer | null;
  data: Buffer;
}

export interface LogState {
  /** First sequence still stored; lastSeq + 1 when empty. */
  firstSeq: number;
  lastSeq: number;
  messages: number;
  bytes: number;
  /** Sequences found unreadable on recovery, kept out of reads and reported. */
  corrupt: CorruptRange[];
}

export interface CorruptRange {
  segment: string;
  position: number;
  reason: string;
}

export type SyncPolicy = "always" | "interval" | "never";

/** `seq` of the appended message once it is as durable as the sync policy makes it. */
export type AppendCallback = (err: Error | null, seq: number) => void;

export interface MessageLog {
  append(input: AppendInput, done: AppendCallback): void;
  get(seq: number): Promise<StoredMessage | null>;
  /** The first message with seq > `after` whose subject matches `filter` (NATS wildcards), if any. */
  next(after: number, filter?: string): Promise<StoredMessage | null>;
  /** The first message stored at or after `time` (ms). */
  firstAtOrAfter(time: number): Promise<StoredMessage | null>;
  lastBySubject(subject: string): Promise<StoredMessage | null>;
  /** Number of stored messages per subject. */
  subjectCount(subject: string): number;
  state(): LogState;
  close(): Promise<void>;
}

/** Last sequence and count per subject, kept in memory by every log. */
export class SubjectIndex {
  private readonly map = new Map<string, { last: number; count: number }>();

  note(subject: string, seq: number): void {
    const s = this.map.get(subject);
    if (s === undefined) this.map.set(subject, { last: seq, count: 1 });
    else {
      s.last = seq;
      s.count++;
    }
  }

  /** The last sequence stored for `subject`, or 0. */
  last(subject: string): number {
    return this.map.get(subject)?.last ?? 0;
  }

  count(subject: string): number {
    return this.map.get(subject)?.count ?? 0;
  }
}

/** The error an append is refused with before it is queued, or null. */
export function refusal(closed: boolean, size: number, maxRecordBytes: number): Error | null {
  if (closed) return new Error("log is closed");
  if (size > maxRecordBytes) return new Error(`record of ${size} bytes exceeds the limit of ${maxRecordBytes}`);
  return null;
}

/** Promise form of append, for callers that are not on a hot path. */
export function appendAsync(log: MessageLog, input: AppendInput): Promise<number> {
  return new Promise((resolve, reject) => log.append(input, (err, seq) => (err ? reject(err) : resolve(seq))));
}
