/**
 * Kafka broker ids: Kafka names brokers by an int32 that clients keep in
 * their metadata caches, so a node needs the same id across restarts, and
 * no two nodes may share one. Each node name gets one in the metadata:
 *
 *   meta/brokers/<server name>   {"id": N}: the node's id, kept when it stops (no lease)
 *   meta/broker-ids/<N>          the server name holding N: makes an id taken exactly once
 *
 * A node claims the lowest free id, writing both keys in one fenced,
 * revision-compared transaction that expects both absent: of two nodes
 * claiming the same id at once only one wins, the other re-reads and takes
 * the next. A node that finds its name already holds an id keeps it, so a
 * restarted broker comes back under the id clients knew.
 */

import type { MetadataStore } from "./metadata.js";

const BY_NAME = "brokers/";
const BY_ID = "broker-ids/";
/** Kafka's broker ids are int32 >= 0; far more than a cluster's nodes. */
const MAX_BROKER_ID = 2 ** 31 - 1;

export class BrokerIds {
  constructor(
    private readonly metadata: MetadataStore,
    readonly self: string,
  ) {}

  /** The id of a node name, if it has one. */
  idOf(name: string): number | undefined {
    const e = this.metadata.get(BY_NAME + name);
    if (e === undefined) return undefined;
    try {
      const id = (JSON.parse(e.value) as { id?: unknown }).id;
      return typeof id === "number" && Number.isInteger(id) && id >= 0 && id <= MAX_BROKER_ID ? id : undefined;
    } catch {
      return undefined;
    }
  }

  /** Every node name that holds an id, with it. */
  all(): Map<string, number> {
    const out = new Map<string, number>();
    for (const e of this.metadata.list(BY_NAME)) {
      const name = e.key.slice(BY_NAME.length);
      const id = this.idOf(name);
      if (id !== undefined) out.set(name, id);
    }
    return out;
  }

  /**
   * This node's id: the one its name holds, or the lowest free one, claimed.
   * Throws the metadata store's errors (fenced, etcd unavailable).
   */
  async claim(): Promise<number> {
    for (;;) {
      const mine = this.idOf(this.self);
      if (mine !== undefined) return mine;
      const taken = new Set<number>();
      for (const e of this.metadata.list(BY_ID)) taken.add(Number(e.key.slice(BY_ID.length)));
      for (const id of this.all().values()) taken.add(id);
      let id = 0;
      while (taken.has(id)) id++;
      if (id > MAX_BROKER_ID) throw new Error("no Kafka broker id is free");
      try {
        await this.metadata.commit([
          { key: BY_NAME + this.self, expect: 0, put: JSON.stringify({ id }) },
          { key: BY_ID + id, expect: 0, put: this.self },
        ]);
        return id;
      } catch (err) {
        // Another node took the id (or this name's id was written meanwhile): read again.
        if ((err as Error).name === "ConcurrentChangeError") continue;
        throw err;
      }
    }
  }
}
