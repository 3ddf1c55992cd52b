/** Accepted sockets reading into a buffer of the server's own (util/socket-reads.ts). */

import { test } from "node:test";
import assert from "node:assert/strict";
import { connect, createServer, type Server, type Socket } from "node:net";
import { createServer as createTlsServer, connect as tlsConnect, type TLSSocket } from "node:tls";
import { randomBytes } from "node:crypto";
import { readFileSync, rmSync } from "node:fs";
import { readInto } from "../src/util/socket-reads.js";
import { makePki } from "./helpers/pki.js";

function listen(server: Server): Promise<number> {
  return new Promise((resolve) => server.listen(0, "127.0.0.1", () => resolve((server.address() as { port: number }).port)));
}

function dial(port: number): Promise<Socket> {
  return new Promise((resolve, reject) => {
    const s = connect(port, "127.0.0.1", () => resolve(s));
    s.once("error", reject);
  });
}

async function waitUntil(cond: () => boolean, what: string): Promise<void> {
  const deadline = Date.now() + 10_000;
  while (!cond()) {
    if (Date.now() > deadline) assert.fail(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 2));
  }
}

test("two connections sharing one small read buffer each get their bytes intact and in order; pausing stops reads and resuming restarts them", async () => {
  const shared = Buffer.alloc(1000);
  const received = new Map<Socket, Buffer[]>();
  const chunkSizes: number[] = [];
  let pauseAt = -1;
  const accepted: Socket[] = [];
  const server = createServer((socket) => {
    accepted.push(socket);
    received.set(socket, []);
    const on = readInto(socket, shared, (chunk) => {
      assert.equal(chunk.buffer, shared.buffer, "a view of the shared buffer");
      chunkSizes.push(chunk.length);
      received.get(socket)!.push(Buffer.from(chunk));
      if (pauseAt >= 0 && Buffer.concat(received.get(socket)!).length >= pauseAt) {
        pauseAt = -1;
        socket.pause();
      }
    });
    assert.equal(on, true, "Node's reading machinery is the one readInto knows");
    socket.on("error", () => {});
  });
  const port = await listen(server);
  try {
    const a = await dial(port);
    const b = await dial(port);
    await waitUntil(() => accepted.length === 2, "both connections");
    const dataA = randomBytes(300_000);
    const dataB = randomBytes(200_000);
    a.write(dataA);
    b.write(dataB);
    await waitUntil(() => [...received.values()].every((chunks, i) => Buffer.concat(chunks).length === (i === 0 ? dataA : dataB).length), "every byte");
    const [first, second] = accepted;
    assert.ok(Buffer.concat(received.get(first)!).equals(dataA));
    assert.ok(Buffer.concat(received.get(second)!).equals(dataB));
    assert.ok(Math.max(...chunkSizes) <= shared.length, "no read is larger than the buffer");

    // Paused from inside a read: nothing more is read until resumed.
    received.set(first, []);
    pauseAt = 1;
    const more = randomBytes(500_000);
    a.write(more);
    await waitUntil(() => first.isPaused(), "the pause");
    const readWhilePaused = first.bytesRead;
    // Not synchronisation: a window in which nothing may happen.
    await new Promise((r) => setTimeout(r, 100));
    assert.equal(first.bytesRead, readWhilePaused, "nothing read while paused");
    first.resume();
    await waitUntil(() => Buffer.concat(received.get(first)!).length === more.length, "the rest after resuming");
    assert.ok(Buffer.concat(received.get(first)!).equals(more));

    // The end of the stream still ends the socket.
    const closed = new Promise<void>((resolve) => second.once("close", () => resolve()));
    b.end();
    await closed;
    a.destroy();
  } finally {
    for (const s of accepted) s.destroy();
    await new Promise((r) => server.close(r));
  }
});

test("with a next buffer, reads land where the reader asks: a large message is read straight into its destination", async () => {
  const scratch = Buffer.alloc(4096);
  const message = randomBytes(1_000_000);
  const destination = Buffer.alloc(message.length);
  let filled = 0;
  let copied = 0;
  let inPlace = 0;
  const accepted: Socket[] = [];
  const server = createServer((socket) => {
    accepted.push(socket);
    const on = readInto(
      socket,
      scratch,
      (chunk) => {
        if (chunk.buffer === destination.buffer && chunk.byteOffset === destination.byteOffset + filled) inPlace += chunk.length;
        else copied += chunk.copy(destination, filled);
        filled += chunk.length;
      },
      () => (filled < destination.length ? destination.subarray(filled) : scratch),
    );
    assert.equal(on, true);
  });
  const port = await listen(server);
  try {
    const c = await dial(port);
    c.write(message);
    await waitUntil(() => filled === message.length, "the whole message");
    assert.ok(destination.equals(message));
    // Only the first read goes to the scratch buffer (the reader had not asked yet).
    assert.ok(copied <= scratch.length, `${copied} bytes copied`);
    assert.equal(inPlace + copied, message.length);
    c.destroy();
  } finally {
    for (const s of accepted) s.destroy();
    await new Promise((r) => server.close(r));
  }
});

test("a socket with a data listener already, or a TLS socket, is left to read as Node reads", async () => {
  const pki = makePki();
  const results: boolean[] = [];
  const plain = createServer((socket) => {
    socket.on("data", () => {});
    results.push(readInto(socket, Buffer.alloc(64), () => assert.fail("not ours to read")));
    socket.destroy();
  });
  try {
    const got: string[] = [];
    const tls = createTlsServer({ key: readFileSync(pki.serverKey), cert: readFileSync(pki.serverCert) }, (socket: TLSSocket) => {
      results.push(readInto(socket, Buffer.alloc(64), () => assert.fail("not ours to read")));
      socket.on("data", (d: Buffer) => got.push(d.toString()));
    });
    const plainPort = await listen(plain);
    const tlsPort = await listen(tls);
    const p = await dial(plainPort);
    await waitUntil(() => results.length === 1, "the plain connection");
    p.destroy();
    const t = tlsConnect({ port: tlsPort, host: "127.0.0.1", ca: readFileSync(pki.ca) }, () => t.write("over tls"));
    await waitUntil(() => got.join("") === "over tls", "the TLS bytes through Node's own reads");
    t.destroy();
    assert.deepEqual(results, [false, false]);
    await new Promise((r) => tls.close(r));
  } finally {
    await new Promise((r) => plain.close(r));
    rmSync(pki.dir, { recursive: true, force: true });
  }
});
