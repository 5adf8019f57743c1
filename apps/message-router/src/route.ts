import { createHash } from 'node:crypto';
import { Static, Type } from '@sinclair/typebox';
import {
  CLIENT_ID_PATTERN,
  errorDeliverable,
  DeliveryTopicEvent,
  FrameResult,
  GroupTopicEvent,
  InboundEvent,
  jsonDepth,
  receiptMid,
  senderOfMid,
  serverMid,
  TopicSpec,
  TOPICS,
  userMid,
  validateClientFrame,
} from '@parley/contracts';

export interface Routed {
  delivery: DeliveryTopicEvent[];
  group: GroupTopicEvent[];
}

/**
 * An inbound record as the router reads it: the origin the gateway stamped, and a frame the router
 * checks itself. A gateway can accept what this router cannot route (a frame type, group op or field
 * added by a newer release, mid-rollout); such a frame must reach its sender as an error, not the DLQ.
 */
export const InboundRecord = Type.Object({ ...InboundEvent.properties, frame: Type.Unknown() });
export type InboundRecord = Static<typeof InboundRecord>;

/** The inbound topic read as `InboundRecord`s: only a record with no readable sender or an unknown version fails to decode (DLQ). */
export const INBOUND_RECORDS: TopicSpec<InboundRecord> = {
  ...TOPICS.inbound,
  schema: InboundRecord,
  key: (e) => e.from,
};

const ROUTABLE_TYPES: InboundEvent['frame']['type'][] = ['message', 'ack', 'read', 'group', 'typing'];
const clientId = new RegExp(CLIENT_ID_PATTERN);

/** An `error` deliverable to the sender of a frame the router cannot route. */
export type Refusal = ReturnType<typeof errorDeliverable>;
export type Checked = { ok: true; inbound: InboundEvent } | { ok: false; refusal: Refusal };

/** The record's frame checked against what `route` handles; otherwise an `error` deliverable to its sender. */
export function checkInbound(record: InboundRecord): Checked {
  const checked = validateClientFrame(record.frame, { types: ROUTABLE_TYPES }) as FrameResult<
    InboundEvent['frame']
  >;
  if (checked.ok && checked.frame.type === 'read' && readMids(checked.frame).length === 0)
    return refuse(
      record,
      checked.frame.id,
      'invalid_frame',
      `mids: none is a mid of ${JSON.stringify(checked.frame.to)} (<to>:<id>): send a read to the sender of the messages read`,
    );
  if (checked.ok) return { ok: true, inbound: { ...record, frame: checked.frame } };
  return refuse(record, checked.id, checked.code, checked.message);
}

function refuse(
  record: InboundRecord,
  id: string | undefined,
  code: Refusal['frame']['code'],
  message: string,
): Checked {
  return {
    ok: false,
    refusal: errorDeliverable(record.from, {
      id,
      code,
      message: `cannot route this frame: ${message}`,
      mid: refusalMid(record, id),
    }),
  };
}

/**
 * The mids of a read that its `to` sent: a receipt tells a sender about its own messages only. A
 * read addressed to a group id (instead of the message's sender) would otherwise reach the user
 * of that name, and anyone could tell anyone that they read a third user's mids.
 */
function readMids(frame: { to: string; mids: string[] }): string[] {
  return frame.mids.filter((mid) => senderOfMid(mid) === frame.to);
}

/**
 * Deterministic, so a replayed record is refused under the same mid: `~err:<from>:<id>` as the other
 * services' refusals, or the frame's content and time when it has no usable id.
 */
function refusalMid(record: InboundRecord, id: string | undefined): string {
  if (id !== undefined && clientId.test(id)) return serverMid('err', record.from, id);
  const digest = createHash('sha256').update(frameText(record.frame)).digest('base64url').slice(0, 22);
  return serverMid('err', record.from, String(record.sentAt), digest);
}

/** Deeper than this a frame's text is cut short for its digest. */
const DIGEST_DEPTH = 256;

/**
 * The frame as JSON, for a digest: JSON.stringify, unless it is nested deeper than `DIGEST_DEPTH`
 * (JSON.parse reads any depth; JSON.stringify overflows the stack a few thousand levels down, and
 * the record would fail every attempt): then what lies below that depth is left out.
 */
function frameText(frame: unknown): string {
  if (jsonDepth(frame, DIGEST_DEPTH + 1) <= DIGEST_DEPTH) return JSON.stringify(frame);
  const cut = (value: unknown, depth: number): string => {
    if (value === null || typeof value !== 'object') return JSON.stringify(value);
    if (depth === 0) return '"..."';
    if (Array.isArray(value)) return `[${value.map((v) => cut(v, depth - 1)).join(',')}]`;
    const fields = Object.entries(value).map(([k, v]) => `${JSON.stringify(k)}:${cut(v, depth - 1)}`);
    return `{${fields.join(',')}}`;
  };
  return cut(frame, DIGEST_DEPTH);
}

/**
 * Where each inbound frame goes: 1:1 messages, receipts, acks and direct typing to the delivery
 * topic (keyed by the user who must act on them); group messages, group typing and group
 * operations to the group topic (keyed by group id). Pure: the same input always routes the same.
 */
export function route(inbound: InboundEvent, into: Routed = { delivery: [], group: [] }): Routed {
  const { frame, from, sentAt } = inbound;
  const origin = {
    from,
    deviceId: inbound.deviceId,
    connId: inbound.connId,
    gateway: inbound.gateway,
    sentAt,
  };
  switch (frame.type) {
    case 'message':
      if (frame.chat === 'group') {
        into.group.push({ v: 1, kind: 'group-message', ...origin, frame });
      } else {
        into.delivery.push({
          v: 1,
          kind: 'deliver',
          to: frame.to,
          frame: {
            type: 'message',
            mid: userMid(from, frame.id),
            id: frame.id,
            from,
            to: frame.to,
            chat: 'direct',
            body: frame.body,
            sentAt,
          },
        });
      }
      break;
    case 'ack':
      into.delivery.push({
        v: 1,
        kind: 'ack',
        user: from,
        mids: frame.mids,
        deviceId: inbound.deviceId,
        at: sentAt,
      });
      break;
    case 'read': {
      const mids = readMids(frame);
      if (mids.length === 0) break;
      into.delivery.push({
        v: 1,
        kind: 'deliver',
        to: frame.to,
        frame: {
          type: 'receipt',
          mid: receiptMid('read', from, mids),
          status: 'read',
          mids,
          by: from,
          at: sentAt,
        },
      });
      break;
    }
    case 'typing':
      if (frame.chat === 'group') {
        into.group.push({ v: 1, kind: 'group-typing', ...origin, frame });
      } else {
        into.delivery.push({
          v: 1,
          kind: 'deliver',
          to: frame.to,
          ephemeral: true,
          frame: { type: 'typing', from, to: frame.to, chat: 'direct' },
        });
      }
      break;
    case 'group':
      into.group.push({ v: 1, kind: 'group-command', ...origin, frame });
      break;
  }
  return into;
}
