import { test } from "node:test";
import assert from "node:assert/strict";
import { copyInto, writeUint } from "../src/util/bytes.js";

test("copyInto copies short and long runs from views at any offset, one source after another", () => {
  const memory = Buffer.allocUnsafeSlow(4096);
  for (let i = 0; i < memory.length; i++) memory[i] = i % 251;
  // Two views of the same memory at different offsets, and a buffer of its own: a copy must never use another source's offset.
  const a = memory.subarray(100, 2100);
  const b = memory.subarray(1000, 3000);
  const own = Buffer.from(memory.subarray(2000, 4000));
  const dst = Buffer.alloc(8192);
  let p = 0;
  const expected: Buffer[] = [];
  for (const [src, s, e] of [
    [a, 0, 10],
    [a, 5, 1029],
    [b, 7, 1031],
    [a, 3, 1027],
    [own, 0, 2000],
    [b, 100, 163],
    [b, 200, 264],
    [a, 1990, 2000],
  ] as Array<[Buffer, number, number]>) {
    const end = copyInto(src, s, e, dst, p);
    assert.equal(end, p + e - s);
    expected.push(src.subarray(s, e));
    p = end;
  }
  assert.ok(dst.subarray(0, p).equals(Buffer.concat(expected)));
  assert.ok(dst.subarray(p).equals(Buffer.alloc(dst.length - p)), "nothing written past the end");
});

test("writeUint writes the decimal digits of sizes, from 0 to past 2^32", () => {
  const dst = Buffer.alloc(32);
  for (const v of [0, 7, 9, 10, 16, 99, 100, 1024, 65535, 999_999, 1_000_000, 2 ** 31 - 1, 2 ** 32 - 1, 2 ** 32, 9_999_999_999, 10 ** 15]) {
    dst.fill(0);
    const end = writeUint(dst, 3, v);
    assert.equal(dst.toString("latin1", 3, end), String(v));
    assert.equal(dst[2], 0);
    assert.equal(dst[end], 0, `nothing past the digits of ${v}`);
  }
});
