import fs from 'node:fs';
import path from 'node:path';
import { BATCH, crcValid, readInt64, writeInt64 } from './record-batch';

/** One stored batch: where it lives in its segment file, and its bytes while the segment is hot. */
export interface BatchRef {
  base: number;
  last: number;
  pos: number;
  size: number;
  maxTs: number;
  data: Buffer | null;
}

const INDEX_ENTRY = 24; // relBase int32, lastDelta int32, pos int32, size int32, maxTimestamp int64
/** Index entries waiting to be written before an append writes them all at once. */
const INDEX_FLUSH_ENTRIES = 256;

export const segmentName = (base: number) => String(base).padStart(20, '0');

/**
 * A segment: `<base>.log` holds record batches exactly as served (Kafka's own on-disk format) and
 * `<base>.index` one entry per batch. Without a directory the segment lives in memory only.
 */
export class Segment {
  /** Every batch's ref, in order; empty while released (`release`), read back from the index on use. */
  private refs: BatchRef[] = [];
  private released = false;
  /** Batches in the segment, released or not. */
  count = 0;
  /** The first batch's base offset (the segment's base while empty), and the offset after its last. */
  private firstBase: number | undefined;
  private nextOffset: number;
  size = 0;
  /** The largest batch timestamp so far (-1 when empty): batches are only ever appended. */
  private maxTs = -1;
  /** Batches whose index entry is written. */
  private indexed = 0;
  readonly createdAt: number;

  private constructor(
    readonly base: number,
    private readonly logFd: number | null,
    private readonly indexFd: number | null,
    private readonly files: string[],
  ) {
    this.createdAt = Date.now();
    this.nextOffset = base;
  }

  static memory(base: number): Segment {
    return new Segment(base, null, null, []);
  }

  static create(dir: string, base: number): Segment {
    const log = path.join(dir, `${segmentName(base)}.log`);
    const index = path.join(dir, `${segmentName(base)}.index`);
    return new Segment(base, fs.openSync(log, 'w+'), fs.openSync(index, 'w+'), [log, index]);
  }

  /**
   * Opens an existing segment: trusts the index as far as it agrees with the log file, scans the
   * rest of the log (checking CRCs) and truncates a torn or corrupt tail. `hot` loads its bytes.
   */
  static recover(dir: string, base: number, hot: boolean, onTruncate: (bytes: number) => void): Segment {
    const log = path.join(dir, `${segmentName(base)}.log`);
    const index = path.join(dir, `${segmentName(base)}.index`);
    const seg = new Segment(
      base,
      fs.openSync(log, 'r+'),
      fs.openSync(index, fs.existsSync(index) ? 'r+' : 'w+'),
      [log, index],
    );
    const logFd = seg.logFd!;
    const fileSize = fs.fstatSync(logFd).size;
    const indexBuf = fs.readFileSync(index);
    let pos = 0;
    let trusted = 0;
    for (let at = 0; at + INDEX_ENTRY <= indexBuf.length; at += INDEX_ENTRY) {
      const ref: BatchRef = {
        base: base + indexBuf.readInt32BE(at),
        last: 0,
        pos: indexBuf.readInt32BE(at + 8),
        size: indexBuf.readInt32BE(at + 12),
        maxTs: readInt64(indexBuf, at + 16),
        data: null,
      };
      ref.last = ref.base + indexBuf.readInt32BE(at + 4);
      if (ref.pos !== pos || ref.size < BATCH.HEADER_SIZE || pos + ref.size > fileSize) break;
      seg.track(ref);
      pos += ref.size;
      trusted++;
    }
    let rewriteIndex = trusted * INDEX_ENTRY !== indexBuf.length;
    // Scan what the index does not cover.
    const header = Buffer.allocUnsafe(BATCH.HEADER_SIZE);
    while (pos < fileSize) {
      const got = fs.readSync(logFd, header, 0, BATCH.HEADER_SIZE, pos);
      let size = -1;
      try {
        size = got === BATCH.HEADER_SIZE ? BATCH.LOG_OVERHEAD + header.readInt32BE(BATCH.LENGTH) : -1;
        if (header.readInt8(BATCH.MAGIC) !== 2 || size < BATCH.HEADER_SIZE) size = -1;
      } catch {
        size = -1;
      }
      if (size < 0 || pos + size > fileSize) break;
      const batch = Buffer.allocUnsafe(size);
      fs.readSync(logFd, batch, 0, size, pos);
      if (!crcValid(batch)) break;
      const b = readInt64(batch, BATCH.BASE_OFFSET);
      seg.track({
        base: b,
        last: b + batch.readInt32BE(BATCH.LAST_OFFSET_DELTA),
        pos,
        size,
        maxTs: readInt64(batch, BATCH.MAX_TIMESTAMP),
        data: null,
      });
      pos += size;
      rewriteIndex = true;
    }
    if (pos < fileSize) {
      onTruncate(fileSize - pos);
      fs.ftruncateSync(logFd, pos);
    }
    seg.size = pos;
    if (rewriteIndex) {
      fs.ftruncateSync(seg.indexFd!, 0);
      seg.flushIndex();
    } else seg.indexed = seg.refs.length;
    if (hot) seg.load();
    return seg;
  }

  /** Reads the whole segment into memory and points every batch at its bytes. */
  load(): void {
    if (this.logFd === null || this.size === 0) return;
    const all = Buffer.allocUnsafe(this.size);
    fs.readSync(this.logFd, all, 0, this.size, 0);
    for (const ref of this.batches) ref.data = all.subarray(ref.pos, ref.pos + ref.size);
  }

  /**
   * The refs of its batches, in order. A released segment reads them back from its index file first
   * (without their bytes: reads of them go to the log file) and holds them until released again.
   */
  get batches(): readonly BatchRef[] {
    if (this.released) this.reloadIndex();
    return this.refs;
  }

  /** How many batch refs it holds in memory now. */
  get batchesInMemory(): number {
    return this.refs.length;
  }

  /**
   * Lets go of its batch refs, kept in its index file: some 100 bytes of heap per batch, which for
   * every segment a week's retention holds grew the broker's heap by gigabytes. Only a segment on
   * disk whose every entry is written (a complete one: not the active segment). False when not.
   */
  release(): boolean {
    if (this.released) return true;
    if (this.logFd === null || this.indexFd === null || this.indexed < this.refs.length) return false;
    this.refs = [];
    this.released = true;
    return true;
  }

  private reloadIndex(): void {
    const bytes = Buffer.allocUnsafe(this.count * INDEX_ENTRY);
    fs.readSync(this.indexFd!, bytes, 0, bytes.length, 0);
    const refs: BatchRef[] = new Array(this.count);
    for (let i = 0, at = 0; i < this.count; i++, at += INDEX_ENTRY) {
      const base = this.base + bytes.readInt32BE(at);
      refs[i] = {
        base,
        last: base + bytes.readInt32BE(at + 4),
        pos: bytes.readInt32BE(at + 8),
        size: bytes.readInt32BE(at + 12),
        maxTs: readInt64(bytes, at + 16),
        data: null,
      };
    }
    this.refs = refs;
    this.released = false;
  }

  get next(): number {
    return this.nextOffset;
  }

  /** The first batch's base offset; the segment's base while it is empty. */
  get firstOffset(): number {
    return this.firstBase ?? this.base;
  }

  /** Read by the retention check every minute for every partition: kept, not scanned. */
  get maxTimestamp(): number {
    return this.maxTs;
  }

  get persistent(): boolean {
    return this.logFd !== null;
  }

  /**
   * Appends one batch at `base`, rewriting its baseOffset in place. The batch is written at once (a
   * produce is answered after this); its index entry waits for `flushIndex`, since recovery scans
   * the log past the end of the index anyway. A batch the disk took only part of (it filled up) is
   * cut off again and the error thrown: its produce fails, nothing after it lands past a hole.
   */
  append(batch: Buffer, base: number, lastOffsetDelta: number, maxTs: number): BatchRef {
    writeInt64(batch, BATCH.BASE_OFFSET, base);
    const ref: BatchRef = {
      base,
      last: base + lastOffsetDelta,
      pos: this.size,
      size: batch.length,
      maxTs,
      data: batch,
    };
    if (this.logFd !== null) {
      try {
        writeFully(this.logFd, batch, this.size);
      } catch (err) {
        truncateQuietly(this.logFd, this.size);
        throw err;
      }
    }
    this.track(ref);
    this.size += batch.length;
    // The batch is stored: a failed index write must not fail its produce (the retry would store it twice).
    if (this.refs.length - this.indexed >= INDEX_FLUSH_ENTRIES) this.flushIndexIfPossible();
    return ref;
  }

  /**
   * `flushIndex`, where a failure (a full disk) can wait: the entries stay pending for the next
   * flush, and recovery rebuilds whatever the index lacks from the log.
   */
  private flushIndexIfPossible(): void {
    try {
      this.flushIndex();
    } catch {
      /* written at the next flush, or rebuilt by recovery */
    }
  }

  /** Writes the index entries of the batches appended since the last call, in one write. */
  flushIndex(): void {
    if (this.released) return; // every entry was written before it was released
    const from = this.indexed;
    const count = this.refs.length - from;
    if (this.indexFd !== null && count > 0) {
      const buf = Buffer.allocUnsafe(count * INDEX_ENTRY);
      for (let i = 0; i < count; i++) encodeIndexEntry(buf, i * INDEX_ENTRY, this.base, this.refs[from + i]);
      writeFully(this.indexFd, buf, from * INDEX_ENTRY);
    }
    this.indexed = this.refs.length;
  }

  private track(ref: BatchRef): void {
    this.refs.push(ref);
    this.count++;
    this.firstBase ??= ref.base;
    this.nextOffset = ref.last + 1;
    if (ref.maxTs > this.maxTs) this.maxTs = ref.maxTs;
  }

  /** Index of the first batch whose last offset is >= offset (batches.length when none). */
  find(offset: number): number {
    const batches = this.batches;
    let lo = 0;
    let hi = batches.length;
    while (lo < hi) {
      const mid = (lo + hi) >>> 1;
      if (batches[mid].last < offset) lo = mid + 1;
      else hi = mid;
    }
    return lo;
  }

  /** The bytes of batches [from, to), from memory or with one file read. */
  read(from: number, to: number): Buffer[] | Promise<Buffer[]> {
    const refs = this.batches.slice(from, to);
    if (refs.every((r) => r.data)) return refs.map((r) => r.data!);
    const start = refs[0].pos;
    const end = refs[refs.length - 1].pos + refs[refs.length - 1].size;
    const buf = Buffer.allocUnsafe(end - start);
    return new Promise((resolve, reject) =>
      fs.read(this.logFd!, buf, 0, buf.length, start, (err, n) =>
        err ? reject(err) : resolve([buf.subarray(0, n)]),
      ),
    );
  }

  sync(): Promise<void> {
    if (this.logFd === null) return Promise.resolve();
    this.flushIndex();
    return new Promise((resolve, reject) =>
      fs.fdatasync(this.logFd!, (err) => (err ? reject(err) : resolve())),
    );
  }

  close(): void {
    this.flushIndexIfPossible();
    for (const fd of [this.logFd, this.indexFd]) if (fd !== null) fs.closeSync(fd);
  }

  destroy(): void {
    this.close();
    for (const file of this.files) fs.rmSync(file, { force: true });
  }
}

/**
 * Writes all of `buf` at `position`. A write the disk takes only part of returns a short count
 * rather than an error (the error comes with the next write): continued here, so that it either
 * completes or throws, never passes as whole.
 */
function writeFully(fd: number, buf: Buffer, position: number): void {
  for (let done = 0; done < buf.length;) {
    const n = fs.writeSync(fd, buf, done, buf.length - done, position + done);
    if (n <= 0) throw new Error(`wrote ${done} of ${buf.length} bytes`);
    done += n;
  }
}

/** Drops a partial write's bytes past `size`; if even that fails, recovery truncates them. */
function truncateQuietly(fd: number, size: number): void {
  try {
    fs.ftruncateSync(fd, size);
  } catch {
    /* a torn tail that recovery cuts off */
  }
}

function encodeIndexEntry(buf: Buffer, at: number, segBase: number, ref: BatchRef): void {
  buf.writeInt32BE(ref.base - segBase, at);
  buf.writeInt32BE(ref.last - ref.base, at + 4);
  buf.writeInt32BE(ref.pos, at + 8);
  buf.writeInt32BE(ref.size, at + 12);
  writeInt64(buf, at + 16, ref.maxTs);
}
