import {
  DeliveryTopicEvent,
  GroupTopicEvent,
  InboundEvent,
  receiptMid,
  userMid,
} from '@parley/contracts';

export interface Routed {
  delivery: DeliveryTopicEvent[];
  group: GroupTopicEvent[];
}

/**
 * Where each inbound frame goes: 1:1 messages, receipts, acks and direct typing to the delivery
 * topic (keyed by the user who must act on them); group messages, group typing and group
 * operations to the group topic (keyed by group id). Pure: the same input always routes the same.
 */
export function route(inbound: InboundEvent, into: Routed = { delivery: [], group: [] }): Routed {
  const { frame, from, sentAt } = inbound;
  const origin = { from, deviceId: inbound.deviceId, connId: inbound.connId, gateway: inbound.gateway, sentAt };
  switch (frame.type) {
    case 'message':
      if (frame.chat === 'group') {
        into.group.push({ v: 1, kind: 'group-message', ...origin, frame });
      } else {
        into.delivery.push({
          v: 1,
          kind: 'deliver',
          to: frame.to,
          frame: { type: 'message', mid: userMid(from, frame.id), id: frame.id, from, to: frame.to, chat: 'direct', body: frame.body, sentAt },
        });
      }
      break;
    case 'ack':
      into.delivery.push({ v: 1, kind: 'ack', user: from, mids: frame.mids, deviceId: inbound.deviceId, at: sentAt });
      break;
    case 'read':
      into.delivery.push({
        v: 1,
        kind: 'deliver',
        to: frame.to,
        frame: { type: 'receipt', mid: receiptMid('read', from, frame.mids), status: 'read', mids: frame.mids, by: from, at: sentAt },
      });
      break;
    case 'typing':
      if (frame.chat === 'group') {
        into.group.push({ v: 1, kind: 'group-typing', ...origin, frame });
      } else {
        into.delivery.push({ v: 1, kind: 'deliver', to: frame.to, ephemeral: true, frame: { type: 'typing', from, to: frame.to, chat: 'direct' } });
      }
      break;
    case 'group':
      into.group.push({ v: 1, kind: 'group-command', ...origin, frame });
      break;
  }
  return into;
}
