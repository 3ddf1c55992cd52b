/**
 * What the cluster benchmarks share (bench/cluster.ts, bench/replication.ts):
 * one node's configuration file, in nats-server's format, which nagare and
 * nats-server both read; and the wait until a cluster's routes have settled.
 */

/** What one node's configuration file says besides the cluster block (a scenario's other doors). */
export interface NodeConf {
  clientPort: number;
  routePort: number;
  httpPort: number;
  /** Every node's route URL, this node's own included (one list for the whole cluster, as operators write it); none when etcd finds the members. */
  routes: string[];
  extra: string;
  /** The cluster's name (default `bench`). */
  name?: string;
}

/** The same file for nagare and nats-server: both read nats-server's configuration format. */
export function nodeConf(c: NodeConf): string {
  return [
    "host: 127.0.0.1",
    `port: ${c.clientPort}`,
    `http_port: ${c.httpPort}`,
    "cluster {",
    `  name: ${c.name ?? "bench"}`,
    "  host: 127.0.0.1",
    `  port: ${c.routePort}`,
    ...(c.routes.length > 0 ? [`  routes: [${c.routes.map((r) => JSON.stringify(r)).join(", ")}]`] : []),
    "}",
    c.extra,
    "",
  ].join("\n");
}

interface Routez {
  num_routes: number;
  routes: Array<{ rid: number; remote_id: string }>;
}

/** How long the routes must stay as they are before the cluster is measured. */
const SETTLE_MS = 2000;

/**
 * Waits until every node routes to every other one and the routes have not
 * changed for SETTLE_MS. Nodes started one after the other dial each other
 * both ways and drop the duplicates as their retries come in (nagare and
 * nats-server alike); a route dropped while messages cross it loses them,
 * and a closed-loop run then waits for them for ever.
 */
export async function untilMeshSettles(httpPorts: number[], deadlineMs = 30_000): Promise<void> {
  const deadline = Date.now() + deadlineMs;
  let last = "";
  let since = Date.now();
  for (;;) {
    let sig = "";
    let complete = true;
    for (const port of httpPorts) {
      try {
        const z = (await (await fetch(`http://127.0.0.1:${port}/routez`)).json()) as Routez;
        if (z.num_routes !== httpPorts.length - 1) complete = false;
        sig += `${port}:${z.routes.map((r) => `${r.remote_id}/${r.rid}`).sort().join(",")};`;
      } catch {
        complete = false;
      }
    }
    if (sig !== last || !complete) {
      last = sig;
      since = Date.now();
    } else if (Date.now() - since >= SETTLE_MS) return;
    if (Date.now() > deadline) throw new Error(`the cluster's routes did not settle: ${sig}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}
