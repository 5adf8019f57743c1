import type { OffsetsByTopicPartition } from 'kafkajs';
import type { BackgroundWork } from '../bus';

/**
 * `offsets` to commit, each partition of `topic` held at its oldest record whose background work
 * is unfinished: committed past it, a crash would lose that work. Work on records before
 * `firstRead` (read while the member held the partition before, and still under way) does not
 * hold it: the group moved past them while another member held the partition.
 */
export function heldForBackground(
  offsets: OffsetsByTopicPartition,
  topic: string,
  background: BackgroundWork | undefined,
  firstRead: (partition: number) => number | undefined,
): OffsetsByTopicPartition {
  if (!background) return offsets;
  const held = (partition: number, offset: number) => {
    const oldest = background.oldestUnfinished(partition);
    if (oldest === undefined || oldest >= offset) return offset;
    return Math.min(offset, Math.max(oldest, firstRead(partition) ?? oldest));
  };
  return {
    topics: offsets.topics.map((t) =>
      t.topic !== topic
        ? t
        : {
            ...t,
            partitions: t.partitions.map((p) => ({
              ...p,
              offset: String(held(Number(p.partition), Number(p.offset))),
            })),
          },
    ),
  };
}
