/**
 * A network between the processes of a test, made of TCP forwarders on
 * loopback, with faults a test turns on and off per link (Jepsen's "nemesis"
 * for the network). Every connection through a proxy belongs to a link, an
 * unordered pair of names: the proxy's `to` and the connection's `from`,
 * given when the proxy is made (a node's etcd proxy: from that node) or read
 * from the connection's first bytes (`identify: "nats-route"`: the dialling
 * node's INFO names it, so one proxy in front of a node's route listener
 * tells its peers apart).
 *
 * Faults, on a link:
 * - `partition`: nothing passes either way and nothing is closed (no FIN, no
 *   RST: the ends learn only from their own timeouts); a new connection is
 *   accepted and left waiting, its bytes unread, and the far side is not
 *   dialled, as a SYN lost in a partition; `heal` lets everything held go.
 * - `delay`: every byte is held `ms` before it is passed on (order kept).
 * - `cut`: the link's connections are reset now (RST both ways); new ones pass.
 *
 * Bytes held are bounded: past HOLD_LIMIT a side is paused, so its kernel
 * buffers fill and the sender meets TCP backpressure, as on a dark link.
 * The single-proxy helper `startProxy` (one client, one server) is the same
 * machinery with one link.
 */

import { createConnection, createServer, type Server, type Socket } from "node:net";

/** What one side of a connection may hold in this process before it is paused. */
const HOLD_LIMIT = 4 << 20;
/** How much of a route connection's first bytes is searched for the dialler's name. */
const IDENTIFY_LIMIT = 64 << 10;

type LinkState = { kind: "ok" } | { kind: "partition" } | { kind: "delay"; ms: number };

const pairKey = (a: string, b: string): string => (a < b ? `${a}|${b}` : `${b}|${a}`);

export interface FaultProxy {
  /** The port to give clients (or to advertise) instead of the target's. */
  readonly port: number;
  /** The name of what this proxy fronts. */
  readonly to: string;
  /** Connections accepted so far. */
  readonly accepted: number;
  /** Points new connections at another port (a process restarted on a new one). */
  retarget(port: number): void;
  close(): Promise<void>;
}

/** One direction of a connection: bytes waiting (delayed or held), and whether its source is paused for them. */
class Direction {
  queue: Array<{ buf: Buffer; at: number }> = [];
  bytes = 0;
  timer: NodeJS.Timeout | undefined;
  lastAt = 0;
  constructor(
    /** Where the bytes come from (the upstream side is set once it is dialled). */
    public src: Socket,
    readonly conn: Conn,
  ) {}
  dst(): Socket | undefined {
    return this.src === this.conn.down ? this.conn.up : this.conn.down;
  }

  push(buf: Buffer): void {
    const now = Date.now();
    const state = this.conn.state();
    const delay = state.kind === "delay" ? state.ms : 0;
    // Never earlier than what is queued before it: a delay changed mid-stream keeps the order.
    const at = Math.max(this.lastAt, now + delay);
    this.lastAt = at;
    this.queue.push({ buf, at });
    this.bytes += buf.length;
    if (this.bytes > HOLD_LIMIT) this.src.pause();
    this.pump();
  }

  /** Passes on what is due, if the link passes; schedules the rest. */
  pump(): void {
    clearTimeout(this.timer);
    this.timer = undefined;
    const dst = this.dst();
    if (this.conn.closed || dst === undefined || !this.conn.passes()) return;
    const now = Date.now();
    while (this.queue.length > 0 && this.queue[0].at <= now) {
      const { buf } = this.queue.shift()!;
      this.bytes -= buf.length;
      dst.write(buf);
    }
    if (this.queue.length > 0) this.timer = setTimeout(() => this.pump(), this.queue[0].at - now);
    if (dst.writableLength > HOLD_LIMIT) {
      // The far side reads slower than this side sends: TCP backpressure, passed on.
      this.src.pause();
      dst.once("drain", () => this.pump());
    } else if (this.bytes <= HOLD_LIMIT) this.src.resume();
  }
}

class Conn {
  up: Socket | undefined;
  from: string | undefined;
  closed = false;
  readonly toUp: Direction;
  readonly toDown: Direction;
  private sniffed: Buffer[] = [];
  private sniffedBytes = 0;

  constructor(
    readonly net: FaultNet,
    readonly proxy: ProxyImpl,
    readonly down: Socket,
  ) {
    this.from = proxy.from;
    this.toUp = new Direction(down, this);
    this.toDown = new Direction(down, this); // its src becomes `up` once dialled
    down.on("data", (d: Buffer) => this.fromDown(d));
    down.on("error", () => this.destroy(false));
    down.on("close", () => this.destroy(false));
    if (this.from !== undefined) this.maybeConnect();
  }

  state(): LinkState {
    return this.from === undefined ? { kind: "ok" } : this.net.state(this.from, this.proxy.to);
  }

  passes(): boolean {
    return this.from !== undefined && this.state().kind !== "partition";
  }

  private fromDown(d: Buffer): void {
    if (this.from === undefined) {
      // Held until the dialler has named itself (a nagare route sends CONNECT then INFO at once).
      this.sniffed.push(d);
      this.sniffedBytes += d.length;
      const text = Buffer.concat(this.sniffed).toString("latin1");
      const m = /"server_name":"([^"]+)"/.exec(text);
      if (m === null && this.sniffedBytes < IDENTIFY_LIMIT) return;
      this.from = m?.[1] ?? "?";
      const held = this.sniffed;
      this.sniffed = [];
      for (const b of held) this.toUp.push(b);
      if (!this.passes()) this.down.pause();
      this.maybeConnect();
      return;
    }
    this.toUp.push(d);
  }

  /** Dials the target once the link passes (a partitioned link does not even carry the SYN). */
  maybeConnect(): void {
    if (this.closed || this.up !== undefined || !this.passes()) return;
    const up = createConnection(this.proxy.targetPort, "127.0.0.1");
    this.up = up;
    this.toDown.src = up;
    up.on("data", (d: Buffer) => this.toDown.push(d));
    up.on("connect", () => this.toUp.pump());
    up.on("error", () => this.destroy(false));
    up.on("close", () => this.destroy(false));
    this.down.resume();
  }

  /** Called when the link's state changes. */
  wake(): void {
    if (this.up === undefined) this.maybeConnect();
    if (!this.passes()) {
      // Stop reading too: bytes stay in the kernel's buffers, as on a link that went dark.
      this.down.pause();
      this.up?.pause();
      return;
    }
    this.down.resume();
    this.up?.resume();
    this.toUp.pump();
    this.toDown.pump();
  }

  destroy(reset: boolean): void {
    if (this.closed) return;
    this.closed = true;
    clearTimeout(this.toUp.timer);
    clearTimeout(this.toDown.timer);
    for (const s of [this.down, this.up]) {
      if (s === undefined) continue;
      if (reset && !s.destroyed) s.resetAndDestroy();
      else s.destroy();
    }
    this.proxy.conns.delete(this);
  }
}

class ProxyImpl implements FaultProxy {
  readonly conns = new Set<Conn>();
  accepted = 0;
  port = 0;
  private server!: Server;

  constructor(
    private readonly net: FaultNet,
    readonly to: string,
    public targetPort: number,
    /** Fixed source name, or undefined: read from the connection (nats-route). */
    readonly from: string | undefined,
  ) {}

  async listen(): Promise<void> {
    this.server = createServer({ pauseOnConnect: true }, (down) => {
      this.accepted++;
      const c = new Conn(this.net, this, down);
      this.conns.add(c);
      // Unidentified connections must be read to learn who dials; identified ones wait for their link.
      if (c.from === undefined || c.passes()) down.resume();
    });
    await new Promise<void>((resolve, reject) => {
      this.server.once("error", reject);
      this.server.listen(0, "127.0.0.1", () => resolve());
    });
    this.port = (this.server.address() as { port: number }).port;
  }

  retarget(port: number): void {
    this.targetPort = port;
  }

  async close(): Promise<void> {
    for (const c of [...this.conns]) c.destroy(false);
    await new Promise<void>((resolve) => this.server.close(() => resolve()));
  }
}

export class FaultNet {
  private readonly links = new Map<string, LinkState>();
  private readonly proxies: ProxyImpl[] = [];

  /**
   * A proxy in front of `to`, listening on a free loopback port and forwarding
   * to `targetPort`. `from`: the name of everything that connects through it,
   * or "nats-route" to read each dialling node's name from its route INFO.
   */
  async proxy(to: string, targetPort: number, o: { from: string } | { identify: "nats-route" }): Promise<FaultProxy> {
    const p = new ProxyImpl(this, to, targetPort, "from" in o ? o.from : undefined);
    await p.listen();
    this.proxies.push(p);
    return p;
  }

  state(a: string, b: string): LinkState {
    return this.links.get(pairKey(a, b)) ?? { kind: "ok" };
  }

  /** Nothing passes between `a` and `b` until healed. */
  partition(a: string, b: string): void {
    this.set(a, b, { kind: "partition" });
  }

  /** `node` cut off from every name in `others`. */
  isolate(node: string, others: string[]): void {
    for (const o of others) if (o !== node) this.partition(node, o);
  }

  /** Bytes between `a` and `b` are held `ms` each way. */
  delay(a: string, b: string, ms: number): void {
    this.set(a, b, { kind: "delay", ms });
  }

  /** Resets every connection between `a` and `b` now; new ones pass (the link's state is kept). */
  cut(a: string, b: string): number {
    const k = pairKey(a, b);
    let n = 0;
    for (const p of this.proxies) {
      for (const c of [...p.conns]) {
        if (c.from !== undefined && pairKey(c.from, p.to) === k) {
          c.destroy(true);
          n++;
        }
      }
    }
    return n;
  }

  /** Heals the link between `a` and `b`, or every link. */
  heal(a?: string, b?: string): void {
    if (a === undefined || b === undefined) {
      const all = [...this.links.keys()];
      this.links.clear();
      for (const k of all) this.wake(k);
      return;
    }
    this.set(a, b, { kind: "ok" });
  }

  /** The links that are not healthy now, for logs: "a|b partition", "a|c delay 50ms". */
  faults(): string[] {
    return [...this.links].map(([k, s]) => `${k} ${s.kind}${s.kind === "delay" ? ` ${s.ms}ms` : ""}`);
  }

  async close(): Promise<void> {
    await Promise.all(this.proxies.map((p) => p.close()));
  }

  private set(a: string, b: string, s: LinkState): void {
    const k = pairKey(a, b);
    if (s.kind === "ok") this.links.delete(k);
    else this.links.set(k, s);
    this.wake(k);
  }

  private wake(k: string): void {
    for (const p of this.proxies) for (const c of [...p.conns]) if (c.from !== undefined && pairKey(c.from, p.to) === k) c.wake();
  }
}

export interface TcpProxy {
  readonly port: number;
  /** Connections accepted so far. */
  readonly accepted: number;
  blackhole(): void;
  restore(): void;
  close(): Promise<void>;
}

/**
 * One client and one server with a network between them: `blackhole()` is
 * a partition (see above), `restore()` heals it, `close()` ends everything.
 */
export async function startProxy(targetPort: number): Promise<TcpProxy> {
  const net = new FaultNet();
  const p = await net.proxy("server", targetPort, { from: "client" });
  return {
    port: p.port,
    get accepted() {
      return p.accepted;
    },
    blackhole: () => net.partition("client", "server"),
    restore: () => net.heal("client", "server"),
    close: () => net.close(),
  };
}
