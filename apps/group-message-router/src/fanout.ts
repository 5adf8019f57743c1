import {
  DeliverEvent,
  DeliverManyEvent,
  deliverToMany,
  errorDeliverable,
  GroupMessageEvent,
  GroupTypingEvent,
  userMid,
} from '@parley/contracts';
import { Membership } from './membership';

/** Where the delivery topic puts a user: the publishing bus's partitioner, if it can tell. */
export type PartitionOf = ((user: string) => number) | undefined;

/**
 * One frame (mid `<from>:<id>`) for every member except the sender, as `deliver-many` events of one
 * delivery partition each: the frame is written once per partition, not once per member.
 */
export function fanOutMessage(
  event: GroupMessageEvent,
  membership: Membership,
  partitionOf: PartitionOf,
): DeliverManyEvent[] {
  const { from, frame, sentAt } = event;
  const message = {
    type: 'message',
    mid: userMid(from, frame.id),
    id: frame.id,
    from,
    to: frame.to,
    chat: 'group',
    body: frame.body,
    sentAt,
  } as const;
  return deliverToMany(othersThan(from, membership), message, partitionOf);
}

/** Ephemeral typing notices for the other members; session-ms drops those for offline users. */
export function fanOutTyping(
  event: GroupTypingEvent,
  membership: Membership,
  partitionOf: PartitionOf,
): DeliverManyEvent[] {
  const { from, frame } = event;
  const typing = { type: 'typing', from, to: frame.to, chat: 'group' } as const;
  return deliverToMany(othersThan(from, membership), typing, partitionOf, { ephemeral: true });
}

/** The sender is not a member: an `error` deliverable to the sender, and nothing to the group. */
export function notMemberError(event: GroupMessageEvent): DeliverEvent {
  const { from, frame } = event;
  return errorDeliverable(from, {
    id: frame.id,
    code: 'not_member',
    message: `not a member of group ${frame.to}`,
  });
}

function othersThan(sender: string, membership: Membership): string[] {
  return membership.members.filter((member) => member !== sender);
}
