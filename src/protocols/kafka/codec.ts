/**
 * Kafka's wire types: big-endian fixed-width integers, INT16-length strings
 * and INT32-length bytes and arrays, and in flexible versions unsigned-varint
 * "compact" lengths (N + 1, 0 meaning null) with tagged fields after each
 * structure. Record fields use zigzag varints (see records.ts).
 *
 * The reader throws KafkaDecodeError on any read past the frame: a request
 * that lies about a length is refused, never read beyond.
 *
 * Both carry a `flexible` mode, set from the request header: in a flexible
 * version every STRING, BYTES and ARRAY field is compact, so `string()`,
 * `nullableBytes()`, `array()` and the rest read and write the compact form
 * then, and one decoder or encoder serves both kinds of version with a
 * `taggedFields()` after each structure (which does nothing otherwise).
 */

export class KafkaDecodeError extends Error {}

/** Kafka's all-zero UUID (Uuid.ZERO_UUID: "no topic id"), as 32 hex digits, as `uuid()` reads and writes them. */
export const ZERO_UUID = "0".repeat(32);

const TWO_32 = 0x100000000;
/** 2^63: the first number past INT64's range (and what 2^63-1 reads as). */
const INT64_LIMIT = 2 ** 63;

function unzigzag(u: number): number {
  return u % 2 === 0 ? u / 2 : -(u + 1) / 2;
}

function required(s: string | null): string {
  if (s === null) throw new KafkaDecodeError("null where a string is required");
  return s;
}

export class Reader {
  pos: number;
  /** A flexible version's body: compact strings, bytes and arrays (see the top of this file). */
  flexible = false;
  constructor(
    readonly buf: Buffer,
    start = 0,
    readonly end = buf.length,
  ) {
    this.pos = start;
  }

  get remaining(): number {
    return this.end - this.pos;
  }

  private need(n: number): number {
    const at = this.pos;
    if (n < 0 || at + n > this.end) throw new KafkaDecodeError(`read of ${n} bytes at ${at} passes the end (${this.end})`);
    this.pos = at + n;
    return at;
  }

  i8(): number {
    return this.buf.readInt8(this.need(1));
  }
  bool(): boolean {
    return this.buf[this.need(1)] !== 0;
  }
  i16(): number {
    return this.buf.readInt16BE(this.need(2));
  }
  i32(): number {
    return this.buf.readInt32BE(this.need(4));
  }
  u32(): number {
    return this.buf.readUInt32BE(this.need(4));
  }
  /** INT64 as a number; Kafka offsets and times stay below 2^53. */
  i64(): number {
    const at = this.need(8);
    return this.buf.readInt32BE(at) * TWO_32 + this.buf.readUInt32BE(at + 4);
  }

  /** An unsigned base-128 varint of at most `maxBytes` bytes; past 2^53 precision is lost, which no field we read needs. */
  private unsigned(maxBytes: number): number {
    let v = 0;
    let mul = 1;
    for (let i = 0; i < maxBytes; i++) {
      const b = this.buf[this.need(1)];
      v += (b & 0x7f) * mul;
      if ((b & 0x80) === 0) return v;
      mul *= 128;
    }
    throw new KafkaDecodeError(`varint longer than ${maxBytes} bytes`);
  }
  uvarint(): number {
    return this.unsigned(5);
  }
  /** Zigzag varint (record fields). */
  varint(): number {
    return unzigzag(this.unsigned(5));
  }
  /** Zigzag varlong. */
  varlong(): number {
    return unzigzag(this.unsigned(10));
  }

  private text(n: number): string | null {
    if (n < 0) return null;
    const at = this.need(n);
    return this.buf.toString("utf8", at, at + n);
  }
  nullableString(): string | null {
    return this.flexible ? this.compactNullableString() : this.text(this.i16());
  }
  string(): string {
    return required(this.nullableString());
  }
  compactNullableString(): string | null {
    return this.text(this.uvarint() - 1);
  }
  compactString(): string {
    return required(this.compactNullableString());
  }
  /** INT32-length bytes, as a view into the request (copy what must outlive it). */
  nullableBytes(): Buffer | null {
    const n = this.flexible ? this.uvarint() - 1 : this.i32();
    return n < 0 ? null : this.raw(n);
  }
  /** Bytes that may not be null, as a view: a null length is malformed, as Kafka's generated readers find it. */
  bytes(): Buffer {
    const b = this.nullableBytes();
    if (b === null) throw new KafkaDecodeError("null where bytes are required");
    return b;
  }
  /** Flexible versions' bytes: unsigned-varint length + 1 (0 for null), as a view. */
  compactNullableBytes(): Buffer | null {
    const n = this.uvarint() - 1;
    return n < 0 ? null : this.raw(n);
  }
  raw(n: number): Buffer {
    const at = this.need(n);
    return this.buf.subarray(at, at + n);
  }
  /** Passes over n bytes; returns where they start. */
  skip(n: number): number {
    return this.need(n);
  }

  /** An array length: -1 is null. Bounded by the bytes left, since each element takes at least one. */
  arrayLength(flexible = this.flexible): number {
    const n = flexible ? this.uvarint() - 1 : this.i32();
    if (n > this.remaining) throw new KafkaDecodeError(`array of ${n} elements in ${this.remaining} bytes`);
    return n;
  }
  /** An array that may not be null: a null (negative) length is malformed, as Kafka's generated readers find it. */
  array<T>(read: (r: Reader) => T, flexible = this.flexible): T[] {
    const n = this.arrayLength(flexible);
    if (n < 0) throw new KafkaDecodeError("null where an array is required");
    const out: T[] = [];
    for (let i = 0; i < n; i++) out.push(read(this));
    return out;
  }
  /** An array of structures, each followed (in a flexible version) by its tagged-field section. */
  structs<T>(read: (r: Reader) => T): T[] {
    return this.array((r) => {
      const item = read(r);
      r.taggedFields();
      return item;
    });
  }
  /** A flexible version's UUID (topic ids) as 32 hex digits. */
  uuid(): string {
    const at = this.need(16);
    return this.buf.toString("hex", at, at + 16);
  }
  /** The tagged-field section that ends a structure in a flexible version; nothing otherwise. */
  taggedFields(): void {
    if (this.flexible) this.tags();
  }
  /** Skips a tagged-field section; we know no tags. */
  tags(): void {
    const n = this.uvarint();
    for (let i = 0; i < n; i++) {
      this.uvarint();
      this.need(this.uvarint());
    }
  }
}

/** A growable big-endian writer. */
export class Writer {
  buf: Buffer;
  pos = 0;
  /** A flexible version's body: compact strings, bytes and arrays (see the top of this file). */
  flexible = false;
  constructor(initial = 256) {
    this.buf = Buffer.allocUnsafe(initial);
  }

  /** Makes room for n bytes and returns where they go; read `this.buf` only after calling it (it may be replaced). */
  private room(n: number): number {
    if (this.pos + n > this.buf.length) {
      const next = Buffer.allocUnsafe(Math.max(this.buf.length * 2, this.pos + n));
      this.buf.copy(next, 0, 0, this.pos);
      this.buf = next;
    }
    const at = this.pos;
    this.pos += n;
    return at;
  }

  /** Makes room for n more bytes at once, so that a large response is not grown by doubling (and copying) from small. */
  grow(n: number): void {
    this.room(n);
    this.pos -= n;
  }

  i8(v: number): this {
    const at = this.room(1);
    this.buf.writeInt8(v, at);
    return this;
  }
  bool(v: boolean): this {
    const at = this.room(1);
    this.buf[at] = v ? 1 : 0;
    return this;
  }
  i16(v: number): this {
    const at = this.room(2);
    this.buf.writeInt16BE(v, at);
    return this;
  }
  i32(v: number): this {
    const at = this.room(4);
    this.buf.writeInt32BE(v, at);
    return this;
  }
  u32(v: number): this {
    const at = this.room(4);
    this.buf.writeUInt32BE(v >>> 0, at);
    return this;
  }
  /**
   * INT64 from a number. A client's Long.MAX_VALUE (2^63-1, which Kafka takes
   * as a committed offset and hands back) reads as 2^63, the nearest double:
   * written back as 2^63-1, not thrown on (the answer, every later one that
   * echoes it, would fail).
   */
  i64(v: number): this {
    const at = this.room(8);
    if (v >= INT64_LIMIT) {
      this.buf.writeInt32BE(0x7fffffff, at);
      this.buf.writeUInt32BE(0xffffffff, at + 4);
      return this;
    }
    const hi = Math.floor(v / TWO_32);
    this.buf.writeInt32BE(hi, at);
    this.buf.writeUInt32BE(v - hi * TWO_32, at + 4);
    return this;
  }
  uvarint(v: number): this {
    while (v >= 0x80) {
      const at = this.room(1);
      this.buf[at] = (v % 128) | 0x80;
      v = Math.floor(v / 128);
    }
    const at = this.room(1);
    this.buf[at] = v;
    return this;
  }
  varint(v: number): this {
    return this.uvarint(v >= 0 ? v * 2 : -v * 2 - 1);
  }
  nullableString(s: string | null): this {
    if (this.flexible) return this.compactNullableString(s);
    if (s === null) return this.i16(-1);
    const n = Buffer.byteLength(s);
    this.i16(n);
    const at = this.room(n);
    this.buf.write(s, at, "utf8");
    return this;
  }
  string(s: string): this {
    return this.nullableString(s);
  }
  /** Flexible versions' string: unsigned-varint length + 1 (0 for null). */
  compactNullableString(s: string | null): this {
    if (s === null) return this.uvarint(0);
    const n = Buffer.byteLength(s);
    this.uvarint(n + 1);
    const at = this.room(n);
    this.buf.write(s, at, "utf8");
    return this;
  }
  compactString(s: string): this {
    return this.compactNullableString(s);
  }
  nullableBytes(b: Buffer | null): this {
    if (this.flexible) return b === null ? this.uvarint(0) : this.compactBytes(b);
    if (b === null) return this.i32(-1);
    this.i32(b.length);
    return this.raw(b);
  }
  compactBytes(b: Buffer): this {
    this.uvarint(b.length + 1);
    return this.raw(b);
  }
  raw(b: Buffer): this {
    const at = this.room(b.length);
    b.copy(this.buf, at);
    return this;
  }
  /** Bytes [start, end) of `b`, copied without making a view of them. */
  span(b: Buffer, start: number, end: number): this {
    const at = this.room(end - start);
    b.copy(this.buf, at, start, end);
    return this;
  }
  /** A length of bytes that follow (INT32, or compact in a flexible version). */
  bytesLength(n: number): this {
    return this.flexible ? this.uvarint(n + 1) : this.i32(n);
  }
  arrayLength(n: number, flexible = this.flexible): this {
    return flexible ? this.uvarint(n + 1) : this.i32(n);
  }
  array<T>(items: readonly T[], write: (w: Writer, item: T) => void, flexible = this.flexible): this {
    this.arrayLength(items.length, flexible);
    for (const it of items) write(this, it);
    return this;
  }
  /**
   * The response shape of many APIs: topics by name, each with its
   * partitions written by `write`; flexible versions with compact types and
   * a tagged-field section after each topic and partition.
   */
  topicPartitions<P>(topics: ReadonlyArray<{ name: string; partitions: readonly P[] }>, flexible: boolean, write: (w: Writer, p: P) => void): this {
    return this.array(
      topics,
      (w, t) => {
        if (flexible) w.compactString(t.name);
        else w.string(t.name);
        w.array(
          t.partitions,
          (w, p) => {
            write(w, p);
            if (flexible) w.tags();
          },
          flexible,
        );
        if (flexible) w.tags();
      },
      flexible,
    );
  }
  /** An empty tagged-field section. */
  tags(): this {
    return this.uvarint(0);
  }
  /** The tagged-field section that ends a structure in a flexible version (empty); nothing otherwise. */
  taggedFields(): this {
    return this.flexible ? this.uvarint(0) : this;
  }
  /** A UUID given as 32 hex digits (all zeros: none). */
  uuid(hex: string): this {
    const at = this.room(16);
    this.buf.write(hex, at, 16, "hex");
    return this;
  }
  /** Reserves four bytes for a length written later with `patchI32`. */
  reserveI32(): number {
    return this.room(4);
  }
  patchI32(at: number, v: number): void {
    this.buf.writeInt32BE(v, at);
  }
  result(): Buffer {
    return this.buf.subarray(0, this.pos);
  }
}
