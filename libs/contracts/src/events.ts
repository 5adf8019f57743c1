import { Static, TSchema, Type } from '@sinclair/typebox';
import { ConnId, DeviceId, Mid, receiptMid, senderOfMid, serverMid, Timestamp, UserId } from './ids';
import type { ErrorCode } from './errors';
import { MAX_RECIPIENTS_PER_EVENT } from './limits';
import { AckFrame, GroupFrame, MessageFrame, ReadFrame, TypingFrame } from './client-frames';
import { Deliverable, ErrorFrame, PushedFrame } from './server-frames';

/**
 * Internal events between services. Each carries `v` (schema version) and `kind`;
 * consumers refuse versions they do not know (the record goes to the topic's DLQ).
 */
const event = <K extends string, P extends Record<string, TSchema>>(kind: K, props: P, description: string) =>
  Type.Object(
    { v: Type.Literal(1), kind: Type.Literal(kind), ...props },
    { $id: `${kind}Event`, description },
  );

/** Who sent a frame and through which connection: stamped by the gateway, never taken from the client. */
const Origin = {
  from: UserId,
  deviceId: Type.Optional(DeviceId),
  connId: Type.Optional(Type.String()),
  gateway: Type.Optional(Type.String({ description: 'Gateway instance id' })),
  sentAt: Timestamp,
};

export const InboundEvent = event(
  'inbound',
  { ...Origin, frame: Type.Union([MessageFrame, AckFrame, ReadFrame, GroupFrame, TypingFrame]) },
  'A client frame as received by a gateway',
);
export type InboundEvent = Static<typeof InboundEvent>;

export const DeliverEvent = event(
  'deliver',
  {
    to: UserId,
    frame: PushedFrame,
    ephemeral: Type.Optional(Type.Boolean({ description: 'Only if online; never stored or retried' })),
    replay: Type.Optional(Type.Boolean({ description: 'Redelivery of a stored deliverable on connect' })),
  },
  'Something for session-ms to deliver to a user',
);
export type DeliverEvent = Omit<Static<typeof DeliverEvent>, 'frame'> & { frame: PushedFrame };

/**
 * A refusal that reaches its sender asynchronously (the frame was accepted, then refused further
 * on): an `error` deliverable. Its mid is `~err:<to>:<id>` for a frame with a valid client id, so a
 * replay is one error; a frame without one needs a mid of the caller's (deterministic) choosing.
 */
export function errorDeliverable(
  to: string,
  error: { code: ErrorCode; message: string } & (
    { id: string; mid?: string } | { id?: undefined; mid: string }
  ),
): DeliverEvent & { frame: ErrorFrame & { mid: string } } {
  const { code, message, id } = error;
  const mid = error.mid ?? serverMid('err', to, error.id!);
  return {
    v: 1,
    kind: 'deliver',
    to,
    frame: { type: 'error', mid, ...(id === undefined ? {} : { id }), code, message },
  };
}

export const DeliverManyEvent = event(
  'deliver-many',
  {
    to: Type.Array(UserId, { minItems: 1, maxItems: MAX_RECIPIENTS_PER_EVENT }),
    frame: PushedFrame,
    ephemeral: Type.Optional(Type.Boolean({ description: 'Only if online; never stored or retried' })),
  },
  'One frame for several users, all keyed to one partition (the first names the key): a fan-out without a copy of the frame per recipient. Means one `deliver` per user.',
);
export type DeliverManyEvent = Omit<Static<typeof DeliverManyEvent>, 'frame'> & { frame: PushedFrame };

/**
 * `frame` for each of `recipients`, as `deliver-many` events that each hold the recipients of one
 * partition (`partitionOf`, the publishing bus's), at most `MAX_RECIPIENTS_PER_EVENT` each: every
 * recipient stays on its own partition, so its deliverables and acks keep one consumer and one order.
 * Without a `partitionOf` (the bus cannot tell yet) each recipient gets an event of its own.
 */
export function deliverToMany(
  recipients: string[],
  frame: PushedFrame,
  partitionOf: ((key: string) => number) | undefined,
  options: { ephemeral?: boolean; maxPerEvent?: number } = {},
): DeliverManyEvent[] {
  const maxPerEvent = partitionOf
    ? Math.min(options.maxPerEvent ?? MAX_RECIPIENTS_PER_EVENT, MAX_RECIPIENTS_PER_EVENT)
    : 1;
  const events: DeliverManyEvent[] = [];
  const open = new Map<number, DeliverManyEvent>();
  for (const to of recipients) {
    const partition = partitionOf?.(to) ?? 0;
    let current = open.get(partition);
    if (!current || current.to.length >= maxPerEvent) {
      current = { v: 1, kind: 'deliver-many', to: [], frame, ...(options.ephemeral && { ephemeral: true }) };
      events.push(current);
      open.set(partition, current);
    }
    current.to.push(to);
  }
  return events;
}

/**
 * The `delivered` receipts for mids that `by` acked, one per sender (oldest mid first), each to its
 * sender; none for `by`'s own mids or server mids. Only for mids `by` is known to have been sent
 * (pending for them, or stored for them): anyone can ack any mid.
 */
export function deliveredReceipts(by: string, mids: string[], at: number): DeliverEvent[] {
  const bySender = new Map<string, string[]>();
  for (const mid of mids) {
    const sender = senderOfMid(mid);
    if (!sender || sender === by) continue;
    const list = bySender.get(sender);
    if (list) list.push(mid);
    else bySender.set(sender, [mid]);
  }
  return [...bySender].map(([sender, ofSender]) => ({
    v: 1,
    kind: 'deliver',
    to: sender,
    frame: {
      type: 'receipt',
      mid: receiptMid('delivered', by, ofSender),
      status: 'delivered',
      mids: ofSender,
      by,
      at,
    },
  }));
}

/** The `deliver` events a delivery-topic event stands for: itself, one per recipient of a `deliver-many`, none for an ack. */
export function deliveriesIn(event: DeliveryTopicEvent): DeliverEvent[] {
  if (event.kind === 'deliver') return [event];
  if (event.kind === 'ack') return [];
  const { frame, ephemeral } = event;
  return event.to.map((to) => ({ v: 1, kind: 'deliver', to, frame, ...(ephemeral && { ephemeral }) }));
}

/** How many users a delivery-topic event delivers to: what `deliveriesIn` would return, uncounted. */
export function recipientCount(event: DeliveryTopicEvent): number {
  if (event.kind === 'deliver-many') return event.to.length;
  return event.kind === 'deliver' ? 1 : 0;
}

export const AckEvent = event(
  'ack',
  { user: UserId, mids: Type.Array(Mid, { minItems: 1 }), deviceId: Type.Optional(DeviceId), at: Timestamp },
  'A user acked these deliverables',
);
export type AckEvent = Static<typeof AckEvent>;

export const DeliveryTopicEvent = Type.Union([DeliverEvent, DeliverManyEvent, AckEvent]);
export type DeliveryTopicEvent = DeliverEvent | DeliverManyEvent | AckEvent;

export const OfflineDeliverableEvent = event(
  'offline',
  { to: UserId, frame: Deliverable, at: Timestamp },
  'A deliverable that could not be delivered: store it until acked, push-notify',
);
export type OfflineDeliverableEvent = Omit<Static<typeof OfflineDeliverableEvent>, 'frame'> & {
  frame: Deliverable;
};

export const OfflineAckEvent = event(
  'offline-ack',
  {
    user: UserId,
    mids: Type.Array(Mid, { minItems: 1 }),
    at: Timestamp,
    unknown: Type.Optional(
      Type.Literal(true, {
        description:
          'Mids that completed nothing in session-ms, past its quota of such acks for the user (a client acking made-up mids): storage drops those it holds, and keeps a tombstone only for those',
      }),
    ),
  },
  'The user acked deliverables that may have gone offline: storage drops them',
);
export type OfflineAckEvent = Static<typeof OfflineAckEvent>;

export const OfflineTopicEvent = Type.Union([OfflineDeliverableEvent, OfflineAckEvent]);
export type OfflineTopicEvent = OfflineDeliverableEvent | OfflineAckEvent;

const ConnectionProps = {
  user: UserId,
  // Bounded as /send bounds the connIds it takes: session-ms's store holds only what these carried.
  connId: ConnId,
  deviceId: Type.Optional(DeviceId),
  gateway: Type.String({ description: 'Gateway instance id' }),
  gatewayUrl: Type.String({ description: 'Internal base URL of that gateway instance' }),
  at: Timestamp,
  startedAt: Type.Optional({
    ...Timestamp,
    description:
      "When the gateway's process started (absent from older gateways): session-ms asks a gateway it first sees to announce its connections only where some may have reached it before its store's state began",
  }),
};
export const ConnectionUpEvent = event('connection-up', ConnectionProps, 'A device connected to a gateway');
export const ConnectionDownEvent = event('connection-down', ConnectionProps, 'A device disconnected');
export const GatewayHeartbeatEvent = event(
  'gateway-heartbeat',
  {
    gateway: Type.String(),
    gatewayUrl: Type.String(),
    connections: Type.Integer({ minimum: 0 }),
    at: Timestamp,
    startedAt: Type.Optional({
      ...Timestamp,
      description:
        "When the gateway's process started: connections it registered before then died with an earlier process under the same id",
    }),
  },
  'A gateway instance is alive; connections of a gateway that stops beating expire',
);
export const ConnectionTopicEvent = Type.Union([
  ConnectionUpEvent,
  ConnectionDownEvent,
  GatewayHeartbeatEvent,
]);
export type ConnectionUpEvent = Static<typeof ConnectionUpEvent>;
export type ConnectionDownEvent = Static<typeof ConnectionDownEvent>;
export type GatewayHeartbeatEvent = Static<typeof GatewayHeartbeatEvent>;
export type ConnectionTopicEvent = ConnectionUpEvent | ConnectionDownEvent | GatewayHeartbeatEvent;

export const GroupMessageEvent = event(
  'group-message',
  { ...Origin, frame: MessageFrame },
  'A group message to check and fan out',
);
export type GroupMessageEvent = Static<typeof GroupMessageEvent>;

export const GroupCommandEvent = event(
  'group-command',
  { ...Origin, frame: GroupFrame },
  'A group operation sent through the pipe, for group-ms',
);
export type GroupCommandEvent = Static<typeof GroupCommandEvent>;

export const GroupTypingEvent = event(
  'group-typing',
  { ...Origin, frame: TypingFrame },
  'A typing notice for a group: delivered to online members only',
);
export type GroupTypingEvent = Static<typeof GroupTypingEvent>;

export const GroupTopicEvent = Type.Union([GroupMessageEvent, GroupCommandEvent, GroupTypingEvent]);
export type GroupTopicEvent = GroupMessageEvent | GroupCommandEvent | GroupTypingEvent;

export const GroupChangedEvent = event(
  'group-changed',
  {
    group: UserId,
    members: Type.Optional(Type.Array(UserId)),
    deleted: Type.Optional(Type.Boolean()),
    at: Timestamp,
  },
  'Membership of a group changed: caches drop it',
);
export type GroupChangedEvent = Static<typeof GroupChangedEvent>;
