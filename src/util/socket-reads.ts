/**
 * Socket reads into a buffer the server owns, instead of a fresh Buffer per
 * read.
 *
 * Node reads every accepted connection into a new ArrayBuffer per read (up
 * to 64 KiB). For a broker taking in 100 MB/s that is 100 MB/s of external
 * memory that only a garbage collection gives back, and V8 answers it with a
 * mark-compact every 20 MB or so (issue 17 measured a third of a Kafka
 * produce's server CPU in collection and in recompiling what it threw
 * away). Node's documented way out, the `onread` option (a reused buffer
 * and a callback), is taken only by `new net.Socket()` and `net.connect()`,
 * not by a server for the sockets it accepts. This sets the same machinery
 * up on an accepted socket, through Node's own fields for it: the socket's
 * `kBuffer`/`kBufferCb` symbols and its handle's `useUserBuffer`, which is
 * all `onread` does (lib/net.js, Node 20). Where they are not as expected
 * (another Node, a TLS socket) nothing is changed and the caller reads
 * `data` events as before: slower, never wrong.
 */

import type { Socket } from "node:net";

/**
 * Where NATS client connections and routes read, one read at a time: each
 * read is parsed, and what it delivers framed or copied, before the event
 * loop runs another, so one buffer serves every such socket of the process.
 * (The Kafka door reads into its own, with `next`.)
 */
export const natsReads = Buffer.allocUnsafeSlow(256 * 1024);

interface UserBufferHandle {
  useUserBuffer(buf: Uint8Array): void;
}

/**
 * Makes `socket` read into `buffer` and hand each read to `onChunk` as a
 * view of it, valid only until `onChunk` returns (the next read, of this
 * socket or of another sharing the buffer, overwrites it): copy what must
 * outlive the call. With `next`, each read after the first lands where
 * `next` says, asked once the previous read is handled (`onread`'s buffer
 * function): a reader can take bytes straight into their destination, and
 * must not reuse that memory for anything else until the read is handed to
 * it or the socket is destroyed. Pausing and resuming the socket work as
 * usual. Returns false, and changes nothing, when Node's reading machinery
 * is not the one this knows; call it before any `data` listener is added.
 */
export function readInto(socket: Socket, buffer: Buffer, onChunk: (chunk: Buffer) => void, next?: () => Buffer): boolean {
  if ((socket as Socket & { encrypted?: boolean }).encrypted === true) return false;
  const handle = (socket as Socket & { _handle?: Partial<UserBufferHandle> | null })._handle;
  if (handle == null || typeof handle.useUserBuffer !== "function") return false;
  const fields = socket as unknown as Record<symbol, unknown>;
  const symbol = (name: string): symbol | undefined => Object.getOwnPropertySymbols(socket).find((s) => s.description === name);
  const kBuffer = symbol("kBuffer");
  const kBufferCb = symbol("kBufferCb");
  const kBufferGen = symbol("kBufferGen");
  // Fields a socket without `onread` holds as null: anything else is a machinery this does not know.
  if (kBuffer === undefined || kBufferCb === undefined || kBufferGen === undefined) return false;
  if (fields[kBuffer] !== null || fields[kBufferCb] !== null || fields[kBufferGen] !== null) return false;
  if (socket.listenerCount("data") > 0) return false;
  fields[kBuffer] = buffer;
  fields[kBufferCb] = (n: number, buf: Buffer): void => onChunk(buf.subarray(0, n));
  if (next !== undefined) fields[kBufferGen] = next;
  handle.useUserBuffer(buffer);
  return true;
}
