/**
 * The offline records whose push is not done yet (in a window, or being sent), by a key of the
 * push's (`user\nmid`): the consumer commits below each partition's oldest, so a crash or a
 * deploy hands them to push-ms's next reader instead of losing them.
 */
export class UnfinishedRecords {
  private readonly byKey = new Map<string, Array<{ partition: number; offset: number }>>();
  /** Per partition, per offset, how many keys hold it (events packed into one record share it). */
  private readonly holds = new Map<number, Map<number, number>>();

  hold(key: string, partition: number, offset: number): void {
    const positions = this.byKey.get(key) ?? [];
    this.byKey.set(key, positions);
    positions.push({ partition, offset });
    const ofPartition = this.holds.get(partition) ?? new Map<number, number>();
    this.holds.set(partition, ofPartition);
    ofPartition.set(offset, (ofPartition.get(offset) ?? 0) + 1);
  }

  /** The push for `key` is done (sent, failed, acked, dropped): its records are no longer held. */
  release(key: string): void {
    for (const { partition, offset } of this.byKey.get(key) ?? []) {
      const ofPartition = this.holds.get(partition)!;
      const left = ofPartition.get(offset)! - 1;
      if (left > 0) ofPartition.set(offset, left);
      else ofPartition.delete(offset);
      if (ofPartition.size === 0) this.holds.delete(partition);
    }
    this.byKey.delete(key);
  }

  /** Read at each commit (every 500 ms): a scan of what the partition holds is cheap enough. */
  oldestUnfinished(partition: number): number | undefined {
    const ofPartition = this.holds.get(partition);
    if (!ofPartition) return undefined;
    let oldest = Infinity;
    for (const offset of ofPartition.keys()) if (offset < oldest) oldest = offset;
    return oldest;
  }

  get size(): number {
    return this.byKey.size;
  }
}

export const pushKey = (user: string, mid: string) => `${user}\n${mid}`;
