/**
 * A bare TCP client for speaking (and mis-speaking) the NATS protocol byte by
 * byte, where the official clients would refuse to send what a test needs.
 */

import { connect, type Socket } from "node:net";

export class RawClient {
  private readonly socket: Socket;
  private received = "";
  private waiters: Array<() => void> = [];
  readonly closed: Promise<void>;
  isClosed = false;

  private constructor(socket: Socket) {
    this.socket = socket;
    socket.setEncoding("latin1");
    socket.on("data", (s: string) => {
      this.received += s;
      this.wake();
    });
    socket.on("error", () => {});
    this.closed = new Promise((resolve) =>
      socket.on("close", () => {
        this.isClosed = true;
        this.wake();
        resolve();
      }),
    );
  }

  static async open(port: number): Promise<RawClient> {
    const socket = connect(port, "127.0.0.1");
    await new Promise<void>((resolve, reject) => {
      socket.once("connect", resolve);
      socket.once("error", reject);
    });
    const c = new RawClient(socket);
    await c.waitFor(/^INFO \{.*\}\r\n/, "INFO");
    return c;
  }

  /** Opens, sends CONNECT, and waits for the PONG that proves it was taken. */
  static async connected(port: number, connect = '{"verbose":false,"pedantic":false}'): Promise<RawClient> {
    const c = await RawClient.open(port);
    c.send(`CONNECT ${connect}\r\nPING\r\n`);
    await c.waitFor(/PONG\r\n/, "PONG after CONNECT");
    c.consume();
    return c;
  }

  send(data: string | Buffer): void {
    if (!this.socket.destroyed) this.socket.write(data);
  }

  /** Everything received since the last consume(). */
  get text(): string {
    return this.received;
  }

  consume(): string {
    const t = this.received;
    this.received = "";
    return t;
  }

  /** Resolves once the received text matches; rejects with what was seen at the deadline. */
  async waitFor(re: RegExp, what: string, timeoutMs = 5000): Promise<RegExpMatchArray> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const m = this.received.match(re);
      if (m) return m;
      const left = deadline - Date.now();
      if (left <= 0 || this.isClosed) {
        throw new Error(`waiting for ${what}: got ${JSON.stringify(this.received.slice(0, 500))}${this.isClosed ? " (closed)" : ""}`);
      }
      await new Promise<void>((resolve) => {
        const t = setTimeout(resolve, left);
        this.waiters.push(() => {
          clearTimeout(t);
          resolve();
        });
      });
    }
  }

  async waitClosed(what: string, timeoutMs = 5000): Promise<void> {
    let timer: NodeJS.Timeout | undefined;
    const timeout = new Promise<never>((_, reject) => {
      timer = setTimeout(() => reject(new Error(`waiting for the server to close (${what}); got ${JSON.stringify(this.received.slice(0, 500))}`)), timeoutMs);
    });
    try {
      await Promise.race([this.closed, timeout]);
    } finally {
      clearTimeout(timer);
    }
  }

  /** A PING answered by a PONG: the connection is open and its parser in step. */
  async roundTrip(): Promise<void> {
    this.consume();
    this.send("PING\r\n");
    await this.waitFor(/PONG\r\n/, "PONG");
  }

  destroy(): void {
    this.socket.destroy();
  }

  private wake(): void {
    const w = this.waiters;
    this.waiters = [];
    for (const f of w) f();
  }
}
