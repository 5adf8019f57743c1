/** A fetcher that has not started a fetch for this long, with no batch in progress, is taken for gone. */
export const STALE_FETCHER_MS = 30_000;

interface FetchCycle {
  /** When the previous fetch started: what it vouches for once the next one starts. */
  previous: number;
  /** When the current fetch started. */
  current: number;
  /** The current fetch vouches for nothing (it may predate a rebalance or span a pause). */
  tainted: boolean;
  /** Fetch answers seen when it started: none since means it failed (the broker is unreachable). */
  answersAtStart: number;
}

/**
 * How far one consumer group member has read its partitions, as a time T such that every record
 * written before T has been handled. kafkajs fetches from a broker again only once every batch of
 * the previous fetch is handled, so when fetch N+1 starts, everything written before fetch N
 * started is handled, except on partitions known to hold more (a batch cut short, one still being
 * handled): those count with the time of their first unhandled record. A fetch must be able to
 * return every assigned partition (the consumer's maxBytes must not cut partitions off).
 * Conservative by design: what is not known is "not read yet".
 */
export class ReadPosition {
  /** Partitions with unhandled records: just before the first of them. */
  private readonly behind = new Map<number, number>();
  /** Partitions whose batch a handler is working on. */
  private readonly inProgress = new Set<number>();
  private readonly fetches = new Map<number, FetchCycle>();
  private assigned: Set<number> | undefined;
  private pausedAt: number | undefined;
  private last: number | undefined;
  private answers = 0;

  constructor(private readonly now: () => number = Date.now) {}

  /**
   * The group was (re)joined, possibly while batches of the old assignment still run: fetches
   * started before now vouch for nothing, and partitions no longer assigned stop counting.
   */
  joined(assigned?: number[]): void {
    const before = this.assigned;
    this.assigned = assigned && new Set(assigned);
    // A partition gained here was read by its previous owner: no fetch of this member vouches for
    // it until one started after now (kafkajs fetches again soon after the join, but a retry tick
    // may come first).
    const gained = !before || !assigned || assigned.some((partition) => !before.has(partition));
    if (gained) for (const cycle of this.fetches.values()) cycle.previous = 0;
    for (const partition of this.behind.keys()) {
      if (!this.isAssigned(partition) || !this.inProgress.has(partition)) this.behind.delete(partition);
    }
    for (const cycle of this.fetches.values()) cycle.tainted = true;
  }

  fetchStarted(nodeId: number): void {
    const cycle = this.fetches.get(nodeId);
    let previous = 0; // a first fetch vouches for nothing
    if (cycle && this.answers === cycle.answersAtStart)
      previous = cycle.previous; // it failed: no progress
    else if (cycle && !cycle.tainted) previous = cycle.current;
    this.fetches.set(nodeId, {
      previous,
      current: this.now(),
      tainted: this.pausedAt !== undefined,
      answersAtStart: this.answers,
    });
  }

  /** A Fetch response came back (kafkajs reports a failed fetch as an empty one). */
  fetchAnswered(): void {
    this.answers++;
  }

  batchStarted(partition: number, firstTimestamp: number): void {
    this.inProgress.add(partition);
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
    if (!this.isAssigned(partition)) this.behind.delete(partition);
    else if (next !== undefined) this.behind.set(partition, next - 1);
    else if (moreInPartition) this.behind.set(partition, lastTimestamp);
    else this.behind.delete(partition);
  }

  batchEnded(partition: number): void {
    this.inProgress.delete(partition);
  }

  /** Paused partitions are not read: fetches during the pause vouch for nothing. */
  paused(): void {
    this.pausedAt ??= this.now();
    for (const cycle of this.fetches.values()) cycle.tainted = true;
  }

  resumed(): void {
    this.pausedAt = undefined;
  }

  upTo(): number {
    const now = this.now();
    let upTo = Math.min(now, this.pausedAt ?? now);
    // Assigned nothing, and no batch of an earlier assignment running: there is nothing to read.
    // (kafkajs sends no Fetch then, so its fetch cycles would never count as answered.)
    if (this.assigned?.size === 0 && this.inProgress.size === 0) return (this.last = upTo);
    for (const [partition, before] of this.behind)
      if (this.isAssigned(partition)) upTo = Math.min(upTo, before);
    let live = 0;
    for (const { previous, current } of this.fetches.values()) {
      if (current <= now - STALE_FETCHER_MS && this.inProgress.size === 0) continue;
      live++;
      upTo = Math.min(upTo, previous);
    }
    // Every fetcher has gone quiet (the consumer crashed or stopped): hold what was last known.
    if (this.fetches.size > 0 && live === 0) upTo = Math.min(upTo, this.last ?? 0);
    this.last = upTo;
    return upTo;
  }

  private isAssigned(partition: number): boolean {
    return this.assigned === undefined || this.assigned.has(partition);
  }
}
