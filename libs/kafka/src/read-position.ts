/** A fetcher that has not started a fetch for this long is taken for gone (its broker lost leadership). */
export const STALE_FETCHER_MS = 30_000;

/**
 * How far one consumer group member has read its partitions, as a time T such that every record
 * written before T has been handled. kafkajs fetches from a broker again only once every batch of
 * the previous fetch is handled, so when fetch N+1 starts, everything written before fetch N
 * started is handled, except on partitions known to hold more (a batch cut short by maxBytes, or
 * one still being handled): those count with the time of their first unhandled record.
 * Conservative by design: unknown means "not read yet".
 */
export class ReadPosition {
  /** Partitions with unhandled records: just before the first of them. */
  private readonly behind = new Map<number, number>();
  /** Per broker: when its previous and its current fetch started. */
  private readonly fetches = new Map<number, { previous: number; current: number }>();
  private pausedAt: number | undefined;

  constructor(private readonly now: () => number = Date.now) {}

  /** The assignment may have changed: nothing is known about the new partitions yet. */
  joined(): void {
    this.behind.clear();
    this.fetches.clear();
  }

  fetchStarted(nodeId: number): void {
    const previous = this.fetches.get(nodeId)?.current ?? 0; // the first fetch vouches for nothing
    this.fetches.set(nodeId, { previous, current: this.now() });
  }

  batchStarted(partition: number, firstTimestamp: number): void {
    if (!this.behind.has(partition)) this.behind.set(partition, firstTimestamp - 1);
  }

  /**
   * A chunk of a batch is handled. `next` is the timestamp of the batch's next record, if the batch
   * holds more; `moreInPartition` says whether the partition held records beyond the batch.
   */
  chunkHandled(
    partition: number,
    lastTimestamp: number,
    next: number | undefined,
    moreInPartition: boolean,
  ): void {
    if (next !== undefined) this.behind.set(partition, next - 1);
    else if (moreInPartition) this.behind.set(partition, lastTimestamp);
    else this.behind.delete(partition);
  }

  /** Paused partitions are not read: the position stays where it was until resumed. */
  paused(): void {
    this.pausedAt ??= this.upTo();
  }

  resumed(): void {
    this.pausedAt = undefined;
  }

  upTo(): number {
    const now = this.now();
    let upTo = Math.min(now, this.pausedAt ?? now);
    for (const before of this.behind.values()) upTo = Math.min(upTo, before);
    for (const { previous, current } of this.fetches.values()) {
      if (current > now - STALE_FETCHER_MS) upTo = Math.min(upTo, previous);
    }
    return upTo;
  }
}
