import fs from 'node:fs';
import path from 'node:path';
import type { Logger } from 'pino';
import { ErrorCode } from '../protocol/errors';
import { BatchError, batchInfo, crcValid } from './record-batch';
import { BatchRef, Segment } from './segment';

export type FsyncPolicy = 'never' | 'interval' | 'always';

export interface LogConfig {
  /** Roll to a new segment past this many bytes. */
  segmentBytes: number;
  /** Roll a segment older than this, so that time-based retention can delete it. */
  segmentMs: number;
  /** Delete whole segments whose newest record is older than this; -1 keeps forever. */
  retentionMs: number;
  /** Delete the oldest segments while the partition is larger than this; -1 for no limit. */
  retentionBytes: number;
  /** Largest record batch accepted. */
  maxMessageBytes: number;
  /** Check CRC-32C of produced batches. */
  verifyCrc: boolean;
  /**
   * Bytes of the newest batches kept in memory for fetches (persistent logs). Older batches are
   * read from the segment file, usually from the page cache: a long-running broker's memory does
   * not grow with its log.
   */
  cacheBytes: number;
}

interface ProducerState {
  epoch: number;
  lastSeq: number;
  /** When it last wrote here (its batches' time at recovery). */
  lastAppendAt: number;
  /** The last few batches, to recognise a retried duplicate and answer with its offset. */
  recent: { firstSeq: number; lastSeq: number; base: number }[];
}

export interface AppendResult {
  errorCode: number;
  baseOffset: number;
  /** False for a duplicate that was answered without writing. */
  written: boolean;
}

export interface ReadResult {
  errorCode: number;
  chunks: Buffer[];
  bytes: number;
}

/**
 * A producer silent this long is forgotten (Kafka's producer.id.expiration.ms, 1 day): every service
 * restart and every failed produce request starts a producer with a new id (the bus's `newProducer`),
 * and the state of each one that ever wrote to a partition was kept for as long as the broker ran.
 * A forgotten producer that writes again is taken as new, as Kafka takes it.
 */
export const PRODUCER_EXPIRY_MS = 24 * 60 * 60 * 1000;

/**
 * Segments read in full on recovery (the idempotent producers' state comes from them), and whose
 * batch refs stay in memory; older ones keep theirs in their index files (Segment.release).
 */
const HOT_SEGMENTS = 2;
/** Older segments whose batch refs stay in memory after a read (a consumer catching up reads on). */
const READ_SEGMENTS_KEPT = 2;

/** One partition's log: segments, offsets, idempotent-producer state and fetch waiters. */
export class PartitionLog {
  private segments: Segment[] = [];
  /** Batches whose bytes are in memory, oldest first from `cachedFrom`, and their total size. */
  private cached: BatchRef[] = [];
  private cachedFrom = 0;
  private cachedBytes = 0;
  private readonly producers = new Map<number, ProducerState>();
  /** Segments older than the hot ones read lately, least recently first: they keep their refs. */
  private readCold: Segment[] = [];
  /** Woken on every append (long-polling fetches). */
  readonly waiters = new Set<() => void>();
  /**
   * Segments written since a sync covered them: the active one, and any that rolled since (several
   * between two syncs where segments are small or writes fast), which no later write would bring back.
   */
  private unsynced = new Set<Segment>();
  /** The latest sync (`sync`). */
  private syncing: Promise<void> = Promise.resolve();

  private constructor(
    readonly topic: string,
    readonly partition: number,
    private readonly dir: string | null,
    public config: LogConfig,
    private readonly logger: Logger,
  ) {}

  static create(
    topic: string,
    partition: number,
    dir: string | null,
    config: LogConfig,
    logger: Logger,
  ): PartitionLog {
    const log = new PartitionLog(topic, partition, dir, config, logger);
    if (dir) {
      fs.mkdirSync(dir, { recursive: true });
      const bases = fs
        .readdirSync(dir)
        .filter((f) => /^\d{20}\.log$/.test(f))
        .map((f) => Number(f.slice(0, 20)))
        .sort((a, b) => a - b);
      bases.forEach((base, i) => {
        const hot = i >= bases.length - HOT_SEGMENTS;
        log.segments.push(
          Segment.recover(dir, base, hot, (bytes) =>
            logger.warn(
              { topic, partition, segment: base, bytes },
              'truncated a torn write at the end of a segment',
            ),
          ),
        );
      });
      if (log.segments.length === 0) log.segments.push(Segment.create(dir, 0));
      log.rebuildProducers();
      log.cacheNewest();
      log.releaseCold();
    } else {
      log.segments.push(Segment.memory(0));
    }
    return log;
  }

  get logStartOffset(): number {
    return this.segments[0].firstOffset;
  }

  get nextOffset(): number {
    return this.active.next;
  }

  get sizeBytes(): number {
    let n = 0;
    for (const s of this.segments) n += s.size;
    return n;
  }

  private get active(): Segment {
    return this.segments[this.segments.length - 1];
  }

  /** Appends the batches of one Produce request partition; answers the first batch's base offset. */
  append(batches: Buffer[], now = Date.now()): AppendResult {
    let first = -1;
    let written = false;
    for (const batch of batches) {
      if (batch.length > this.config.maxMessageBytes)
        throw new BatchError(ErrorCode.MESSAGE_TOO_LARGE, `batch of ${batch.length} bytes`);
      if (this.config.verifyCrc && !crcValid(batch))
        throw new BatchError(ErrorCode.CORRUPT_MESSAGE, 'CRC mismatch');
      const info = batchInfo(batch);
      if (info.lastOffsetDelta < 0)
        throw new BatchError(ErrorCode.INVALID_RECORD, 'negative lastOffsetDelta');
      if (info.producerId >= 0) {
        const check = this.checkSequence(
          info.producerId,
          info.producerEpoch,
          info.baseSequence,
          info.lastOffsetDelta,
        );
        if (check.errorCode !== ErrorCode.NONE)
          return { errorCode: check.errorCode, baseOffset: -1, written };
        if (check.duplicateOf !== undefined) {
          if (first < 0) first = check.duplicateOf;
          continue;
        }
      }
      this.maybeRoll(batch.length, now);
      const base = this.nextOffset;
      const ref = this.active.append(batch, base, info.lastOffsetDelta, info.maxTimestamp);
      if (this.dir) {
        this.cache(ref);
        this.unsynced.add(this.active);
      }
      if (info.producerId >= 0)
        this.recordSequence(
          info.producerId,
          info.producerEpoch,
          info.baseSequence,
          info.lastOffsetDelta,
          base,
          now,
        );
      if (first < 0) first = base;
      written = true;
    }
    if (written) for (const wake of this.waiters) wake();
    return { errorCode: ErrorCode.NONE, baseOffset: first, written };
  }

  /**
   * Keeps `ref`'s bytes in memory and lets the oldest cached batches past `cacheBytes` go to the
   * file. The bytes are copied out of a buffer much larger than the batch (a produce request, a
   * recovered segment), which a cached slice would otherwise keep alive whole.
   */
  private cache(ref: BatchRef): void {
    const data = ref.data!;
    if (data.buffer.byteLength > 2 * data.length) {
      ref.data = Buffer.allocUnsafeSlow(data.length);
      data.copy(ref.data);
    }
    this.cached.push(ref);
    this.cachedBytes += ref.size;
    while (this.cachedBytes > this.config.cacheBytes && this.cachedFrom < this.cached.length - 1) {
      const old = this.cached[this.cachedFrom++];
      old.data = null;
      this.cachedBytes -= old.size;
    }
    if (this.cachedFrom > 1024 && this.cachedFrom * 2 > this.cached.length) {
      this.cached = this.cached.slice(this.cachedFrom);
      this.cachedFrom = 0;
    }
  }

  /** After recovery: the newest batches within `cacheBytes` stay in memory, the rest go to the file. */
  private cacheNewest(): void {
    const refs = this.segments.flatMap((seg) => seg.batches);
    let from = refs.length;
    let bytes = 0;
    while (from > 0 && refs[from - 1].data && bytes + refs[from - 1].size <= this.config.cacheBytes)
      bytes += refs[--from].size;
    for (let i = 0; i < from; i++) refs[i].data = null;
    for (let i = from; i < refs.length; i++) this.cache(refs[i]);
  }

  private checkSequence(
    pid: number,
    epoch: number,
    seq: number,
    lastDelta: number,
  ): { errorCode: number; duplicateOf?: number } {
    const state = this.producers.get(pid);
    if (!state || epoch > state.epoch) return { errorCode: ErrorCode.NONE };
    if (epoch < state.epoch) return { errorCode: ErrorCode.INVALID_PRODUCER_EPOCH };
    if (seq === ((state.lastSeq + 1) | 0) || (state.lastSeq === 2147483647 && seq === 0))
      return { errorCode: ErrorCode.NONE };
    const dup = state.recent.find((r) => r.firstSeq === seq && r.lastSeq === seq + lastDelta);
    if (dup) return { errorCode: ErrorCode.NONE, duplicateOf: dup.base };
    return { errorCode: ErrorCode.OUT_OF_ORDER_SEQUENCE_NUMBER };
  }

  private recordSequence(
    pid: number,
    epoch: number,
    seq: number,
    lastDelta: number,
    base: number,
    at: number,
  ): void {
    let state = this.producers.get(pid);
    if (!state || epoch !== state.epoch)
      this.producers.set(pid, (state = { epoch, lastSeq: -1, recent: [], lastAppendAt: at }));
    state.lastAppendAt = Math.max(state.lastAppendAt, at);
    state.lastSeq = seq + lastDelta;
    state.recent.push({ firstSeq: seq, lastSeq: seq + lastDelta, base });
    if (state.recent.length > 5) state.recent.shift();
  }

  private rebuildProducers(): void {
    for (const seg of this.segments.slice(-HOT_SEGMENTS)) {
      for (const ref of seg.batches) {
        if (!ref.data) continue;
        const info = batchInfo(ref.data);
        if (info.producerId >= 0)
          this.recordSequence(
            info.producerId,
            info.producerEpoch,
            info.baseSequence,
            info.lastOffsetDelta,
            ref.base,
            info.maxTimestamp,
          );
      }
    }
  }

  /** Producers whose state it keeps (to tell a retried batch from a new one). */
  get producersKnown(): number {
    return this.producers.size;
  }

  /** Rolls to a new active segment after the current one, which is complete, index included. */
  private roll(): void {
    const active = this.active;
    active.flushIndex();
    this.segments.push(this.dir ? Segment.create(this.dir, active.next) : Segment.memory(active.next));
    this.releaseCold();
  }

  /**
   * The batch refs of segments older than the hot ones and not read lately go to their index files:
   * the broker's heap holds those of a few segments per partition, not of all its retention holds.
   */
  private releaseCold(): void {
    const cold = this.segments.length - HOT_SEGMENTS;
    for (let i = 0; i < cold; i++) if (!this.readCold.includes(this.segments[i])) this.segments[i].release();
  }

  /** After a read of these segments: the cold ones among them are the latest read; older reads let go. */
  private readFrom(segments: Segment[]): void {
    const hot = this.segments.slice(-HOT_SEGMENTS);
    for (const seg of segments) {
      if (hot.includes(seg)) continue;
      this.readCold = [...this.readCold.filter((s) => s !== seg), seg];
    }
    while (this.readCold.length > READ_SEGMENTS_KEPT) this.readCold.shift()!.release();
  }

  private maybeRoll(incoming: number, now: number): void {
    const active = this.active;
    if (active.count === 0) return;
    if (active.size + incoming <= this.config.segmentBytes && now - active.createdAt < this.config.segmentMs)
      return;
    this.roll();
  }

  /**
   * Batches from `offset` on, up to `maxBytes` (at least one whole batch when `atLeastOne`, so a
   * batch larger than the limit still gets through). May start before `offset`: clients skip.
   */
  read(offset: number, maxBytes: number, atLeastOne: boolean): ReadResult | Promise<ReadResult> {
    if (offset < this.logStartOffset || offset > this.nextOffset)
      return { errorCode: ErrorCode.OFFSET_OUT_OF_RANGE, chunks: [], bytes: 0 };
    if (offset === this.nextOffset) return { errorCode: ErrorCode.NONE, chunks: [], bytes: 0 };
    let s = this.findSegment(offset);
    let i = this.segments[s].find(offset);
    const parts: (Buffer[] | Promise<Buffer[]>)[] = [];
    const read: Segment[] = [];
    let bytes = 0;
    while (s < this.segments.length) {
      const seg = this.segments[s];
      const batches = seg.batches;
      read.push(seg);
      const from = i;
      while (i < batches.length) {
        const size = batches[i].size;
        if (bytes + size > maxBytes && !(atLeastOne && bytes === 0)) break;
        bytes += size;
        i++;
      }
      if (i > from) parts.push(seg.read(from, i));
      if (i < batches.length) break;
      s++;
      i = 0;
    }
    this.readFrom(read);
    if (parts.every(Array.isArray))
      return { errorCode: ErrorCode.NONE, chunks: (parts as Buffer[][]).flat(), bytes };
    return Promise.all(parts).then((all) => ({ errorCode: ErrorCode.NONE, chunks: all.flat(), bytes }));
  }

  private findSegment(offset: number): number {
    let lo = 0;
    let hi = this.segments.length - 1;
    while (lo < hi) {
      const mid = (lo + hi + 1) >>> 1;
      if (this.segments[mid].base <= offset) lo = mid;
      else hi = mid - 1;
    }
    return lo;
  }

  /** The first offset whose batch's newest timestamp is >= ts (ListOffsets by time); -1 when none. */
  offsetForTimestamp(ts: number): number {
    for (const seg of this.segments) {
      if (seg.maxTimestamp < ts) continue; // none of its batches is that new
      const found = seg.batches.find((ref) => ref.maxTs >= ts);
      this.readFrom([seg]);
      if (found) return Math.max(found.base, this.logStartOffset);
    }
    return -1;
  }

  /** Batch refs held in memory, over all its segments. */
  get batchesInMemory(): number {
    let n = 0;
    for (const seg of this.segments) n += seg.batchesInMemory;
    return n;
  }

  /** Deletes whole old segments by age and size; never the active one. */
  applyRetention(now = Date.now()): number {
    for (const [pid, state] of this.producers)
      if (state.lastAppendAt < now - PRODUCER_EXPIRY_MS) this.producers.delete(pid);
    let deleted = 0;
    const { retentionMs, retentionBytes } = this.config;
    let size = this.sizeBytes;
    while (this.segments.length > 1) {
      const oldest = this.segments[0];
      const expired = retentionMs >= 0 && oldest.maxTimestamp >= 0 && oldest.maxTimestamp < now - retentionMs;
      const tooBig = retentionBytes >= 0 && size - oldest.size >= retentionBytes;
      if (!expired && !tooBig) break;
      this.segments.shift();
      this.readCold = this.readCold.filter((s) => s !== oldest);
      this.unsynced.delete(oldest);
      oldest.destroy();
      size -= oldest.size;
      deleted++;
    }
    // Roll an idle active segment that has expired as a whole, so the next pass can delete it.
    if (retentionMs >= 0 && this.active.count > 0 && this.active.maxTimestamp < now - retentionMs) {
      this.roll();
      deleted += this.applyRetention(now);
    }
    return deleted;
  }

  /**
   * Syncs what was written since the last sync, in every segment it went to. With nothing new it
   * answers with the sync still under way, if any: a retried batch found stored is on disk only once
   * its original's sync has ended. The segments of a sync that failed wait for the next one.
   */
  sync(): Promise<void> {
    if (this.unsynced.size === 0) return this.syncing;
    const segments = [...this.unsynced];
    this.unsynced.clear();
    this.syncing = (async () => {
      try {
        await Promise.all(segments.map((s) => s.sync()));
      } catch (err) {
        for (const s of segments) if (this.segments.includes(s)) this.unsynced.add(s);
        throw err;
      }
    })();
    return this.syncing;
  }

  close(): void {
    for (const wake of this.waiters) wake();
    for (const seg of this.segments) seg.close();
  }

  destroy(): void {
    for (const wake of this.waiters) wake();
    for (const seg of this.segments) seg.destroy();
    if (this.dir) fs.rmSync(this.dir, { recursive: true, force: true });
  }

  static dirFor(root: string, topic: string, partition: number): string {
    return path.join(root, topic, String(partition));
  }
}
