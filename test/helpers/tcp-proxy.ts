/**
 * A TCP forwarder on a free loopback port, to put a network between one
 * client and a server. `blackhole()` is a partition: nothing passes either
 * way and nothing is closed (no FIN, no RST: the client learns only from
 * its own timeouts), new connections are accepted and left waiting;
 * `restore()` heals it. `close()` ends everything.
 */

import { createConnection, createServer, type Server, type Socket } from "node:net";

export interface TcpProxy {
  readonly port: number;
  /** Connections accepted so far. */
  readonly accepted: number;
  blackhole(): void;
  restore(): void;
  close(): Promise<void>;
}

export async function startProxy(targetPort: number, targetHost = "127.0.0.1"): Promise<TcpProxy> {
  const pairs = new Set<{ down: Socket; up: Socket | undefined }>();
  let held = false;
  let accepted = 0;

  const connectUp = (pair: { down: Socket; up: Socket | undefined }): void => {
    const up = createConnection(targetPort, targetHost);
    pair.up = up;
    pair.down.pipe(up);
    up.pipe(pair.down);
    const end = (): void => {
      pair.down.destroy();
      up.destroy();
      pairs.delete(pair);
    };
    up.on("error", end);
    up.on("close", end);
    pair.down.resume();
  };

  const server: Server = createServer({ pauseOnConnect: true }, (down) => {
    accepted++;
    const pair = { down, up: undefined as Socket | undefined };
    pairs.add(pair);
    down.on("error", () => {
      pair.up?.destroy();
      pairs.delete(pair);
    });
    down.on("close", () => {
      pair.up?.destroy();
      pairs.delete(pair);
    });
    if (!held) connectUp(pair);
  });
  await new Promise<void>((resolve, reject) => {
    server.once("error", reject);
    server.listen(0, "127.0.0.1", () => resolve());
  });

  return {
    port: (server.address() as { port: number }).port,
    get accepted() {
      return accepted;
    },
    blackhole: () => {
      held = true;
      for (const p of pairs) {
        // Unpiped and paused: bytes stay in the kernel's buffers, as on a link that went dark.
        p.down.unpipe();
        p.up?.unpipe();
        p.down.pause();
        p.up?.pause();
      }
    },
    restore: () => {
      held = false;
      for (const p of pairs) {
        if (p.up === undefined) connectUp(p);
        else {
          p.down.pipe(p.up);
          p.up.pipe(p.down);
          p.down.resume();
          p.up.resume();
        }
      }
    },
    close: async () => {
      for (const p of pairs) {
        p.down.destroy();
        p.up?.destroy();
      }
      pairs.clear();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}
