/**
 * The message model every door translates to and from: subject, optional
 * reply subject, headers and payload. For core routing the message points at
 * bytes still in the publisher's read buffer so that routing copies nothing
 * until a receiver frames it.
 *
 * Headers travel in the NATS/1.0 header-block encoding (`NATS/1.0\r\nK: V\r\n\r\n`),
 * the compact form that other doors convert to and from.
 */
export class Message {
  subject = "";
  /** Bytes holding subject and reply, for receivers that copy them verbatim. */
  argBuf: Buffer = EMPTY;
  subjectStart = 0;
  subjectEnd = 0;
  /** replyStart === replyEnd means no reply subject. */
  replyStart = 0;
  replyEnd = 0;
  /** Header block then payload, contiguous: data[start, start+hdrLen) are headers. */
  data: Buffer = EMPTY;
  start = 0;
  end = 0;
  hdrLen = 0;
  /**
   * Routed on `subject` but shown to subscribers with the subject in
   * argBuf (a JetStream delivery keeps its stored subject): a route must
   * carry both.
   */
  presented = false;
  /** It came from another node over a route (set by the route door): internal cluster subjects accept nothing else. */
  fromRoute = false;
  /**
   * Made by the cluster's own code (a request to another node): the only
   * kind of message on the cluster's subjects (`$NG.`) that leaves this
   * node, besides answers (`Account.route`).
   */
  clusterMade = false;

  get hasReply(): boolean {
    return this.replyEnd > this.replyStart;
  }

  get reply(): string {
    return this.replyEnd > this.replyStart ? this.argBuf.toString("utf8", this.replyStart, this.replyEnd) : "";
  }

  get size(): number {
    return this.end - this.start;
  }

  /**
   * Sets every field from strings and buffers; for internal publishers, not
   * hot paths. A payload without headers is used as it is, not copied (a
   * replication answer is a MiB): receivers copy what they keep, as they do
   * from a publisher's read buffer.
   */
  static from(subject: string, reply: string, payload: Uint8Array, headers?: Uint8Array): Message {
    const m = new Message();
    m.subject = subject;
    m.argBuf = Buffer.from(reply === "" ? subject : `${subject} ${reply}`);
    m.subjectStart = 0;
    m.subjectEnd = Buffer.byteLength(subject);
    m.replyStart = reply === "" ? 0 : m.subjectEnd + 1;
    m.replyEnd = reply === "" ? 0 : m.argBuf.length;
    const h = headers ?? EMPTY;
    m.data = h.length > 0 ? Buffer.concat([h, payload]) : Buffer.isBuffer(payload) ? payload : Buffer.from(payload.buffer, payload.byteOffset, payload.byteLength);
    m.start = 0;
    m.end = m.data.length;
    m.hdrLen = h.length;
    return m;
  }
}

const EMPTY = Buffer.alloc(0);
