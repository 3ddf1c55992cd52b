/**
 * The server's own JetStream limits, nats-server's `jetstream {
 * max_memory_store, max_file_store }` (also `max_mem`, `max_file`), over
 * every account, with single-server nats-server 2.9 semantics:
 *
 * - an account's JetStream limits (`max_mem`, `max_file` of its
 *   `jetstream` block or JWT) must fit, with every other account's, in the
 *   server's: an account whose JetStream cannot be honoured is not enabled
 *   (at start the server stops);
 * - a stream's `max_bytes` (times its partitions) is reserved against the
 *   server, with every other stream of its storage type in any account:
 *   one that does not fit is refused with the account errors, 10028/10047;
 * - a publish (or a Kafka produce) to a stream of a storage type whose
 *   streams already hold more than the limit is refused, `503 10023
 *   insufficient resources`, as nats-server's `limitsExceeded` refuses it:
 *   what is held is compared, the message itself is not counted.
 *
 * Zero or less is no limit (nats-server computes a default from the
 * machine's memory and disk there; nagare sets none).
 */

import { ApiError } from "./errors.js";
import { heldBytes, LimitErrors, reservedBytes, type AccountLimits, type Reserving } from "./limits.js";
import type { StreamConfig } from "./config.js";

type Storage = StreamConfig["storage"];

/** What a server limit sees of a stream. */
interface Held {
  readonly config: StreamConfig;
  readonly partitions: { length: number };
  readonly heldBytes: number;
}

/** What a server limit sees of an account's JetStream. */
export interface LimitedAccount {
  readonly streams: ReadonlyMap<string, Held>;
  readonly limits: Readonly<AccountLimits>;
  /** What its streams reserve, those being made or changed included, but for stream `except` (JetStream.changing). */
  reservations(except: string | null): Iterable<Reserving>;
}

export const insufficientResources = (): ApiError => new ApiError(503, 10023, "insufficient resources");

export class ServerJetStreamLimits {
  private readonly accounts = new Set<LimitedAccount>();
  readonly maxMemory: number;
  readonly maxStorage: number;

  constructor(maxMemory: number, maxStorage: number) {
    this.maxMemory = maxMemory > 0 ? maxMemory : -1;
    this.maxStorage = maxStorage > 0 ? maxStorage : -1;
  }

  /** Whether either limit is set: then every stream checks publishes against it. */
  get bounded(): boolean {
    return this.maxMemory > 0 || this.maxStorage > 0;
  }

  private max(storage: Storage): number {
    return storage === "memory" ? this.maxMemory : this.maxStorage;
  }

  join(account: LimitedAccount): void {
    this.accounts.add(account);
  }

  leave(account: LimitedAccount): void {
    this.accounts.delete(account);
  }

  /** Why an account's JetStream limits do not fit with the others' (null: they fit), nats-server's sufficientResources. */
  accountError(account: LimitedAccount | null, limits: AccountLimits): ApiError | null {
    for (const storage of ["memory", "file"] as const) {
      const max = this.max(storage);
      if (max < 0) continue;
      const of = (l: Readonly<AccountLimits>): number => Math.max(0, storage === "memory" ? l.maxMemory : l.maxStorage);
      let reserved = of(limits);
      for (const a of this.accounts) if (a !== account) reserved += of(a.limits);
      if (reserved > max) return storage === "memory" ? LimitErrors.memory() : LimitErrors.storage();
    }
    return null;
  }

  /**
   * Why a stream's `max_bytes` does not fit the server (null: it does).
   * `self`: the stream's account and name, left out of the sum (an update,
   * or a create of a stream that exists); `previous`: its reservation
   * before, so a stream whose reservation does not grow always fits.
   */
  reservationError(self: { account: LimitedAccount; name: string }, config: StreamConfig, partitions: number, previous = 0): ApiError | null {
    const max = this.max(config.storage);
    const wanted = config.max_bytes > 0 ? config.max_bytes * partitions : 0;
    if (max < 0 || wanted <= previous) return null;
    let reserved = 0;
    for (const a of this.accounts) reserved += reservedBytes(a.reservations(a === self.account ? self.name : null), config.storage);
    if (reserved + wanted > max) return config.storage === "memory" ? LimitErrors.memory() : LimitErrors.storage();
    return null;
  }

  /** The refusal of a publish to a stream of this storage type: its streams hold more than the limit already. Sums per call: only a server with a limit asks. */
  refusal(storage: Storage): ApiError | null {
    const max = this.max(storage);
    if (max < 0) return null;
    let held = 0;
    for (const a of this.accounts) held += heldBytes(a.streams.values(), storage);
    return held > max ? insufficientResources() : null;
  }
}
