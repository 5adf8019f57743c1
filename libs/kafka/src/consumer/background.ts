import type { OffsetsByTopicPartition } from 'kafkajs';
import type { BackgroundWork } from '../bus';

/**
 * `offsets` to commit, each partition of `topic` held at its oldest record whose background work
 * is unfinished: committed past it, a crash would lose that work.
 */
export function heldForBackground(
  offsets: OffsetsByTopicPartition,
  topic: string,
  background: BackgroundWork | undefined,
): OffsetsByTopicPartition {
  if (!background) return offsets;
  return {
    topics: offsets.topics.map((t) =>
      t.topic !== topic
        ? t
        : {
            ...t,
            partitions: t.partitions.map((p) => {
              const oldest = background.oldestUnfinished(Number(p.partition));
              return oldest === undefined || oldest >= Number(p.offset)
                ? p
                : { ...p, offset: String(oldest) };
            }),
          },
    ),
  };
}
