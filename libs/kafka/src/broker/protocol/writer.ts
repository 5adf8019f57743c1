const TWO_32 = 4294967296;

/**
 * Builds a response as a list of buffers: scalars go into a growing scratch buffer, large byte
 * strings (record batches) are appended as references, so they are never copied.
 */
export class Writer {
  private readonly chunks: Buffer[] = [];
  private buf: Buffer;
  private start = 0;
  private pos = 0;
  private flushed = 0;

  constructor(initial = 256) {
    this.buf = Buffer.allocUnsafe(initial);
  }

  get size(): number {
    return this.flushed + (this.pos - this.start);
  }

  private ensure(n: number): void {
    if (this.pos + n <= this.buf.length) return;
    this.cut();
    this.buf = Buffer.allocUnsafe(Math.max(n, this.buf.length * 2, 1024));
    this.start = this.pos = 0;
  }

  private cut(): void {
    if (this.pos > this.start) {
      this.chunks.push(this.buf.subarray(this.start, this.pos));
      this.flushed += this.pos - this.start;
      this.start = this.pos;
    }
  }

  int8(v: number): this {
    this.ensure(1);
    this.pos = this.buf.writeInt8(v, this.pos);
    return this;
  }

  bool(v: boolean): this {
    return this.int8(v ? 1 : 0);
  }

  int16(v: number): this {
    this.ensure(2);
    this.pos = this.buf.writeInt16BE(v, this.pos);
    return this;
  }

  int32(v: number): this {
    this.ensure(4);
    this.pos = this.buf.writeInt32BE(v, this.pos);
    return this;
  }

  int64(v: number): this {
    this.ensure(8);
    const hi = Math.floor(v / TWO_32);
    this.buf.writeInt32BE(hi, this.pos);
    this.buf.writeUInt32BE(v - hi * TWO_32, this.pos + 4);
    this.pos += 8;
    return this;
  }

  string(s: string | null): this {
    if (s === null) return this.int16(-1);
    const len = Buffer.byteLength(s);
    this.ensure(2 + len);
    this.pos = this.buf.writeInt16BE(len, this.pos);
    this.pos += this.buf.write(s, this.pos, 'utf8');
    return this;
  }

  /** Raw bytes without a length prefix; large ones are referenced, not copied. */
  raw(b: Buffer): this {
    if (b.length < 512) {
      this.ensure(b.length);
      this.pos += b.copy(this.buf, this.pos);
      return this;
    }
    this.cut();
    this.chunks.push(b);
    this.flushed += b.length;
    return this;
  }

  bytes(b: Buffer | null): this {
    if (b === null) return this.int32(-1);
    return this.int32(b.length).raw(b);
  }

  array<T>(items: readonly T[] | null, item: (w: Writer, v: T) => void): this {
    if (items === null) return this.int32(-1);
    this.int32(items.length);
    for (const v of items) item(this, v);
    return this;
  }

  /** The finished buffers, in order. */
  finish(): Buffer[] {
    this.cut();
    return this.chunks;
  }
}
