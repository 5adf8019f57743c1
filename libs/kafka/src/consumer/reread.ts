import type { Admin, Consumer } from 'kafkajs';
import type { Logger } from 'pino';
import type { Membership } from './membership';

export interface Rereading {
  consumer: Pick<Consumer, 'seek'>;
  topic: string;
  groupId: string;
  member: Membership;
  admin: () => Promise<Admin>;
  logger: Logger;
}

/**
 * `Subscription.rereadFrom` for a running member: moves each partition it holds back to the first
 * record written at or after `time`, never forward. False when it holds none.
 */
export async function rewindPartitions(time: number, rereading: Rereading): Promise<boolean> {
  const { consumer, topic, groupId, member, logger } = rereading;
  const held = [...member.assigned];
  if (held.length === 0) return false;
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
  if (rewound.length > 0) logger.warn({ rewound, since: new Date(time).toISOString() }, 'reading again');
  return true;
}
