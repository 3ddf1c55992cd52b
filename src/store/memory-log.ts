/**
 * The memory-only log (`storage: memory`): the same interface and the same
 * ordering and acknowledgement semantics as the file log, nothing on disk.
 */

import { subjectMatches } from "../subjects/subject.js";
import { refusal, SubjectIndex, type AppendCallback, type AppendInput, type LogState, type MessageLog, type StoredMessage } from "./log.js";
import { recordSize } from "./format.js";

export interface MemoryLogOptions {
  maxRecordBytes?: number;
}

export class MemoryLog implements MessageLog {
  private readonly messages: StoredMessage[] = [];
  private readonly subjects = new SubjectIndex();
  private readonly maxRecordBytes: number;
  private lastTime = 0;
  private bytes = 0;
  private closed = false;

  constructor(opts: MemoryLogOptions = {}) {
    this.maxRecordBytes = opts.maxRecordBytes ?? 8 * 1024 * 1024;
  }

  append(input: AppendInput, done: AppendCallback): void {
    const size = recordSize(input);
    const refused = refusal(this.closed, size, this.maxRecordBytes);
    if (refused !== null) {
      done(refused, 0);
      return;
    }
    this.lastTime = Math.max(Date.now(), this.lastTime);
    const seq = this.messages.length + 1;
    this.messages.push({
      seq,
      time: this.lastTime,
      subject: input.subject,
      headers: input.headers ? Buffer.from(input.headers) : null,
      key: input.key ? Buffer.from(input.key) : null,
      data: Buffer.from(input.data),
    });
    this.bytes += size;
    this.subjects.note(input.subject, seq);
    // Acknowledge asynchronously, like the file log, so callers cannot come to rely on a synchronous ack.
    queueMicrotask(() => done(null, seq));
  }

  async get(seq: number): Promise<StoredMessage | null> {
    return this.messages[seq - 1] ?? null;
  }

  async next(after: number, filter?: string): Promise<StoredMessage | null> {
    for (let i = Math.max(0, after); i < this.messages.length; i++) {
      const m = this.messages[i];
      if (filter === undefined || subjectMatches(filter, m.subject)) return m;
    }
    return null;
  }

  async firstAtOrAfter(time: number): Promise<StoredMessage | null> {
    return this.messages.find((m) => m.time >= time) ?? null;
  }

  async lastBySubject(subject: string): Promise<StoredMessage | null> {
    const last = this.subjects.last(subject);
    return last === 0 ? null : this.get(last);
  }

  subjectCount(subject: string): number {
    return this.subjects.count(subject);
  }

  state(): LogState {
    const n = this.messages.length;
    return { firstSeq: 1, lastSeq: n, messages: n, bytes: this.bytes, corrupt: [] };
  }

  async close(): Promise<void> {
    this.closed = true;
  }
}
