/** Deterministic record contents for storage tests: what seq N must hold. */

import type { AppendInput, StoredMessage } from "../../src/store/log.js";

export function expectedRecord(seq: number): AppendInput {
  const size = (seq * 7919) % 700;
  const data = Buffer.alloc(size);
  for (let i = 0; i < size; i++) data[i] = (seq + i * 31) & 0xff;
  return {
    subject: `crash.${seq % 5}`,
    data,
    headers: seq % 3 === 0 ? Buffer.from(`NATS/1.0\r\nSeq: ${seq}\r\n\r\n`) : null,
    key: seq % 4 === 0 ? Buffer.from(`k${seq}`) : null,
  };
}

/** Why `m` is not what seq `seq` must hold, or null. */
export function mismatch(seq: number, m: StoredMessage | null): string | null {
  if (m === null) return `seq ${seq} missing`;
  const e = expectedRecord(seq);
  if (m.seq !== seq) return `seq ${seq} came back as ${m.seq}`;
  if (m.subject !== e.subject) return `seq ${seq}: subject ${m.subject}`;
  if (!Buffer.from(e.data).equals(m.data)) return `seq ${seq}: payload differs`;
  if (!sameBytes(e.headers ?? null, m.headers)) return `seq ${seq}: headers differ`;
  if (!sameBytes(e.key ?? null, m.key)) return `seq ${seq}: key differs`;
  return null;
}

function sameBytes(a: Uint8Array | null, b: Buffer | null): boolean {
  if (a === null || b === null) return a === b;
  return Buffer.from(a).equals(b);
}
