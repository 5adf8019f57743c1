import type { Consumer } from 'kafkajs';
import type { ReadPosition } from '../read-position';
import type { Committer } from './committer';
import type { Membership } from './membership';

/** Keeps a member's standing in its group and its read position in step with its consumer's events. */
export function followConsumerEvents(
  consumer: Consumer,
  topic: string,
  { member, position, committer }: { member: Membership; position: ReadPosition; committer: Committer },
): void {
  consumer.on(consumer.events.GROUP_JOIN, ({ payload }) => {
    member.joined(payload.memberAssignment[topic] ?? []);
    position.joined(member.assigned);
  });
  // kafkajs's own heartbeats (between batches, after an empty fetch) may be the ones to learn of a
  // rebalance: what was handled is committed before the partitions move, whichever beat saw it.
  consumer.on(consumer.events.REBALANCING, () => void committer.commit().catch(() => undefined));
  consumer.on(consumer.events.FETCH_START, ({ payload }) => position.fetchStarted(payload.nodeId));
  consumer.on(consumer.events.REQUEST, ({ payload }) => {
    if (payload.apiName === 'Fetch') position.fetchAnswered();
  });
}
