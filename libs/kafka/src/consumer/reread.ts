import type { Admin, Consumer } from 'kafkajs';
import type { Logger } from 'pino';
import { CommitHeldBack } from './committer';
import type { Membership } from './membership';

export interface Rereading {
  consumer: Pick<Consumer, 'seek'>;
  topic: string;
  groupId: string;
  member: Membership;
  admin: () => Promise<Admin>;
  /** Commits what the member has handled, its rewound partitions at their rewound offsets. */
  commit: () => Promise<void>;
  logger: Logger;
}

/**
 * `Subscription.rereadFrom` for a running member: moves each partition it holds back to the first
 * record written at or after `time`, never forward. False when it holds none, or when the group
 * moved on meanwhile (the caller asks again).
 */
export async function rewindPartitions(time: number, rereading: Rereading): Promise<boolean> {
  const { consumer, topic, groupId, member, logger } = rereading;
  const held = [...member.assigned];
  if (held.length === 0) return false;
  const joins = member.joins;
  const admin = await rereading.admin();
  const [fromTime, [committed]] = await Promise.all([
    admin.fetchTopicOffsetsByTimestamp(topic, time),
    admin.fetchOffsets({ groupId, topics: [topic] }),
  ]);
  const offsetIn = (list: Array<{ partition: number; offset: string }> | undefined, partition: number) =>
    Number(list?.find((p) => p.partition === partition)?.offset ?? -1);
  const rewound: Array<{ partition: number; from: number; to: number }> = [];
  for (const partition of held) {
    if (!member.assigned.includes(partition)) continue; // moved meanwhile: its next owner decides
    const target = offsetIn(fromTime, partition);
    const current = member.nextOffset(partition) ?? offsetIn(committed?.partitions, partition);
    if (target < 0 || current < 0 || target >= current) continue;
    consumer.seek({ topic, partition, offset: String(target) });
    member.rewound(partition, target);
    rewound.push({ partition, from: current, to: target });
  }
  if (rewound.length > 0) {
    logger.warn({ rewound, since: new Date(time).toISOString() }, 'reading again');
    // Committed at once, with the generation the member holds them in. A rebalance under way (the
    // member already committed and waits to rejoin) would otherwise hand the partitions that move
    // at their offsets from before the rewind: their next owner would not read them again. A
    // refused commit is a group that has moved on. One the subscription's mayCommit holds back
    // leaves the committed offsets where it last let them go (for session-ms, at or before the
    // writes it lost): the rewind stands on this member, and asking again would only read the same
    // records again, at each ask, until mayCommit allows.
    try {
      await rereading.commit();
    } catch (err) {
      if (!(err instanceof CommitHeldBack)) {
        logger.info({ err }, 'the rewind could not be committed (a rebalance?): to be asked again');
        return false;
      }
    }
  }
  // A join since it was asked: what it holds now may not be what it rewound.
  return member.joins === joins;
}
