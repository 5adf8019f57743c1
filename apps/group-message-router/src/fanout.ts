import {
  DeliverEvent,
  errorDeliverable,
  GroupMessageEvent,
  GroupTypingEvent,
  userMid,
} from '@parley/contracts';
import { Membership } from './membership';

/** One deliverable per member except the sender, all sharing one frame (mid `<from>:<id>`). */
export function fanOutMessage(
  event: GroupMessageEvent,
  membership: Membership,
  into: DeliverEvent[] = [],
): DeliverEvent[] {
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
  for (const to of membership.members) {
    if (to !== from) into.push({ v: 1, kind: 'deliver', to, frame: message });
  }
  return into;
}

/** Ephemeral typing notices for the other members; session-ms drops those for offline users. */
export function fanOutTyping(
  event: GroupTypingEvent,
  membership: Membership,
  into: DeliverEvent[] = [],
): DeliverEvent[] {
  const { from, frame } = event;
  const typing = { type: 'typing', from, to: frame.to, chat: 'group' } as const;
  for (const to of membership.members) {
    if (to !== from) into.push({ v: 1, kind: 'deliver', to, ephemeral: true, frame: typing });
  }
  return into;
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
