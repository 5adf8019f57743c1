import { Static, Type } from '@sinclair/typebox';
import { ClientMessageId, GroupId, Mid, Recipient, Timestamp, UserId } from './ids';
import { ChatKind, GROUP_OPS } from './client-frames';
import { ERROR_CODE_LIST, ERROR_CODE_PATTERN, ErrorCode } from './errors';

/** Frames the server sends. Every frame with a `mid` is a deliverable and must be acked. */

export const HelloFrame = Type.Object(
  {
    type: Type.Literal('hello'),
    user: UserId,
    connId: Type.String(),
    deviceId: Type.Optional(Type.String()),
  },
  { $id: 'HelloFrame' },
);
export type HelloFrame = Static<typeof HelloFrame>;

export const AcceptedFrame = Type.Object(
  { type: Type.Literal('accepted'), id: ClientMessageId, mid: Mid },
  { $id: 'AcceptedFrame' },
);
export type AcceptedFrame = Static<typeof AcceptedFrame>;

/**
 * An error code. This release writes only ERROR_CODES' own, and reads any code of their form: a
 * frame or event carrying a code a later release added (a rolling upgrade, a rollback) passes
 * through, where a closed list refused the frame or parked the event. Apps meet such codes too.
 */
export const ErrorCodeSchema = Type.Unsafe<ErrorCode>(
  Type.String({
    pattern: ERROR_CODE_PATTERN,
    description: `One of ${ERROR_CODE_LIST.join(', ')}; later releases may add codes: handle one you do not know by its HTTP status, or as a refusal`,
  }),
);

export const ErrorFrame = Type.Object(
  {
    type: Type.Literal('error'),
    id: Type.Optional(Type.String()),
    code: ErrorCodeSchema,
    message: Type.String(),
    mid: Type.Optional(Mid),
    /**
     * An addition to PROTOCOL.md: on `rate_limited`, when the next frame would be taken; on
     * `unavailable`, how long to wait before sending it again (1-2 s, spread at random).
     */
    retryAfterMs: Type.Optional(
      Type.Integer({
        minimum: 0,
        description:
          'On rate_limited: milliseconds until a frame is taken again. On unavailable: milliseconds to wait before sending it again (back off further while refusals go on)',
      }),
    ),
  },
  {
    $id: 'ErrorFrame',
    description:
      'A refused frame. With a `mid` it is a deliverable (an asynchronous refusal) and must be acked.',
  },
);
export type ErrorFrame = Static<typeof ErrorFrame>;

export const PongFrame = Type.Object({ type: Type.Literal('pong') }, { $id: 'PongFrame' });

export const DeliveredMessage = Type.Object(
  {
    type: Type.Literal('message'),
    mid: Mid,
    id: ClientMessageId,
    from: UserId,
    to: Recipient,
    chat: ChatKind,
    body: Type.Unknown(),
    sentAt: Timestamp,
  },
  { $id: 'DeliveredMessage', description: 'A message; `to` is the group id for group messages' },
);
export type DeliveredMessage = Static<typeof DeliveredMessage>;

export const ReceiptFrame = Type.Object(
  {
    type: Type.Literal('receipt'),
    mid: Mid,
    status: Type.Union([Type.Literal('delivered'), Type.Literal('read')]),
    mids: Type.Array(Mid),
    by: UserId,
    at: Timestamp,
  },
  { $id: 'ReceiptFrame' },
);
export type ReceiptFrame = Static<typeof ReceiptFrame>;

export const GroupChangeFrame = Type.Object(
  {
    type: Type.Literal('group'),
    mid: Mid,
    op: Type.Union(GROUP_OPS.map((op) => Type.Literal(op))),
    group: GroupId,
    name: Type.Optional(Type.String()),
    members: Type.Optional(Type.Array(UserId)),
    admins: Type.Optional(
      Type.Array(UserId, {
        description: 'The admins after this change, when it made someone admin (the last admin left)',
      }),
    ),
    by: UserId,
    at: Timestamp,
  },
  { $id: 'GroupChangeFrame', description: 'A group change, sent to every member and to removed members' },
);
export type GroupChangeFrame = Static<typeof GroupChangeFrame>;

export const TypingNotice = Type.Object(
  { type: Type.Literal('typing'), from: UserId, to: Recipient, chat: ChatKind },
  { $id: 'TypingNotice' },
);
export type TypingNotice = Static<typeof TypingNotice>;

/** What can be delivered to a user and must be acked. */
export const Deliverable = Type.Union([
  DeliveredMessage,
  ReceiptFrame,
  GroupChangeFrame,
  Type.Intersect([ErrorFrame, Type.Object({ mid: Mid })]),
]);
export type Deliverable = DeliveredMessage | ReceiptFrame | GroupChangeFrame | (ErrorFrame & { mid: string });

/** What session-ms pushes through a gateway: a deliverable, or an ephemeral typing notice. */
export const PushedFrame = Type.Union([Deliverable, TypingNotice]);
export type PushedFrame = Deliverable | TypingNotice;

export type ServerFrame = HelloFrame | AcceptedFrame | ErrorFrame | Static<typeof PongFrame> | PushedFrame;
