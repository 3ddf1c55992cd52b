/** A NATS parser handler that records what the parser hands on, one line per operation. */

import type { ParserHandler, ProtoError } from "../../src/protocols/nats/parser.js";
import type { Message } from "../../src/subjects/message.js";

export function recorder(): { events: string[]; handler: ParserHandler } {
  const events: string[] = [];
  const handler: ParserHandler = {
    onPub: (m: Message) => events.push(`pub ${m.subject} ${m.reply || "-"} ${m.hdrLen} ${m.data.toString("latin1", m.start, m.end)}`),
    onSub: (s, q, sid) => events.push(`sub ${s} ${q ?? "-"} ${sid}`),
    onUnsub: (sid, max) => events.push(`unsub ${sid} ${max}`),
    onPing: () => events.push("ping"),
    onPong: () => events.push("pong"),
    onConnect: (j) => events.push(`connect ${j}`),
    onError: (k: ProtoError) => events.push(`error ${k}`),
  };
  return { events, handler };
}
