/** Seeded mutations of golden bytes, for the in-process decoder fuzz tests. */

export type Rand = () => number;

export function below(r: Rand, n: number): number {
  return Math.floor(r() * n);
}

export function pick<T>(r: Rand, xs: readonly T[]): T {
  return xs[below(r, xs.length)];
}

/** Where a length or count sits in the input, and how it is written. */
export interface LengthField {
  at: number;
  /** 2 or 4: big-endian signed; 1: an unsigned varint's first byte. */
  width: 1 | 2 | 4;
}

const EXTREMES_16 = [-1, -2, 0, 1, 0x7fff, -0x8000, 0x100];
const EXTREMES_32 = [-1, -2, 0, 1, 0x7fffffff, -0x80000000, 0x10000, 0x7ffffff0, 1 << 24];
const EXTREME_VARINT_BYTES = [0x00, 0x01, 0x7f, 0x80, 0xff];

function randomBytes(r: Rand, n: number): number[] {
  return Array.from({ length: n }, () => below(r, 256));
}

/**
 * One to four edits: bit flips, random bytes, truncation, deleted or
 * duplicated runs, random bytes inserted or appended, and (when the golden
 * decode told where they are) length fields set to extremes.
 */
export function mutate(r: Rand, input: Buffer, lengths: readonly LengthField[] = []): Buffer {
  let b = [...input];
  const edits = 1 + below(r, 4);
  for (let e = 0; e < edits; e++) {
    const at = b.length === 0 ? 0 : below(r, b.length);
    switch (below(r, lengths.length > 0 ? 8 : 7)) {
      case 0:
        if (b.length > 0) b[at] ^= 1 << below(r, 8);
        break;
      case 1:
        if (b.length > 0) b[at] = below(r, 256);
        break;
      case 2:
        b = b.slice(0, at);
        break;
      case 3:
        b.splice(at, 1 + below(r, 16));
        break;
      case 4:
        b.splice(at, 0, ...b.slice(at, at + 1 + below(r, 32)));
        break;
      case 5:
        b.splice(at, 0, ...randomBytes(r, 1 + below(r, 8)));
        break;
      case 6:
        b.push(...randomBytes(r, 1 + below(r, 16)));
        break;
      default: {
        const f = pick(r, lengths);
        if (f.at + f.width > b.length) break;
        if (f.width === 1) b[f.at] = pick(r, EXTREME_VARINT_BYTES);
        else {
          const v = f.width === 2 ? pick(r, EXTREMES_16) : pick(r, EXTREMES_32);
          const tmp = Buffer.alloc(4);
          if (f.width === 2) tmp.writeInt16BE(v);
          else tmp.writeInt32BE(v);
          for (let i = 0; i < f.width; i++) b[f.at + i] = tmp[i];
        }
      }
    }
  }
  return Buffer.from(b);
}

/**
 * Watches Buffer and Int32Array allocations until `restore()`: `largest` is
 * the largest size asked for since the last `reset()`. An allocation sized
 * by an untrusted length shows up here long before it would exhaust memory.
 */
export function watchAllocations(): { readonly largest: number; reset(): void; restore(): void } {
  let largest = 0;
  const note = (n: unknown): void => {
    if (typeof n === "number" && n > largest) largest = n;
  };
  const { alloc, allocUnsafe, allocUnsafeSlow } = Buffer;
  const TypedInt32 = globalThis.Int32Array;
  Buffer.alloc = ((size: number, ...rest: unknown[]) => (note(size), (alloc as (...a: unknown[]) => Buffer)(size, ...rest))) as typeof Buffer.alloc;
  Buffer.allocUnsafe = ((size: number) => (note(size), allocUnsafe(size))) as typeof Buffer.allocUnsafe;
  Buffer.allocUnsafeSlow = ((size: number) => (note(size), allocUnsafeSlow(size))) as typeof Buffer.allocUnsafeSlow;
  globalThis.Int32Array = class extends TypedInt32 {
    constructor(...args: unknown[]) {
      note(typeof args[0] === "number" ? args[0] * 4 : 0);
      super(...(args as []));
    }
  } as Int32ArrayConstructor;
  return {
    get largest() {
      return largest;
    },
    reset() {
      largest = 0;
    },
    restore() {
      Buffer.alloc = alloc;
      Buffer.allocUnsafe = allocUnsafe;
      Buffer.allocUnsafeSlow = allocUnsafeSlow;
      globalThis.Int32Array = TypedInt32;
    },
  };
}
