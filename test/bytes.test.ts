import { test } from "node:test";
import assert from "node:assert/strict";
import { copyInto } from "../src/util/bytes.js";

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
