import { Static, TProperties, Type } from '@sinclair/typebox';
import { ClientMessageId, GroupId, Mid, Recipient, UserId } from './ids';
import { MAX_GROUP_MEMBERS_PER_OP, MAX_MIDS_PER_FRAME } from './limits';

/**
 * Frames a client sends, over WebSocket or in `POST /v1/send`. A `from` or `sentAt` is dropped
 * (the sender is whoever authenticated); other unknown properties are kept, and the routers, which
 * build what they deliver field by field, ignore them.
 */

export const ChatKind = Type.Union([Type.Literal('direct'), Type.Literal('group')], { default: 'direct' });
export type ChatKind = Static<typeof ChatKind>;

export const MessageFrame = Type.Object(
  {
    type: Type.Literal('message'),
    id: ClientMessageId,
    to: Recipient,
    chat: Type.Optional(ChatKind),
    body: Type.Unknown({ description: 'Any JSON value' }),
  },
  { $id: 'MessageFrame', description: '1:1 (`chat: direct`, the default) or group (`chat: group`) message' },
);
export type MessageFrame = Static<typeof MessageFrame>;

/**
 * No C0, DEL or C1 control character (U+0085 is a line break), and no lone UTF-16 surrogate
 * (matched as code points under Ajv's `u` flag, so a proper pair, an emoji, still passes), which no
 * UTF-8 store can hold.
 */
const STORABLE_TEXT_PATTERN = '^[^\\u0000-\\u001F\\u007F-\\u009F\\uD800-\\uDFFF]+$';
/** The same, with tabs and line breaks allowed (text a person writes in lines), or empty. */
export const STORABLE_LINES_PATTERN =
  '^[^\\u0000-\\u0008\\u000B\\u000C\\u000E-\\u001F\\u007F-\\u009F\\uD800-\\uDFFF]*$';

/**
 * A mid a client names (ack, read): no deliverable's mid holds a control character or a lone UTF-16
 * surrogate (user ids, client ids and server mids are plain ASCII), and Postgres cannot take a NUL
 * or a lone surrogate in JSON: an ack naming one would fail persistence-ms on every retry and be
 * parked on the DLQ, holding up that partition's deliverables meanwhile. Refused at the edge.
 */
const ClientMid = Type.String({
  minLength: Mid.minLength,
  maxLength: Mid.maxLength,
  description: Mid.description,
  pattern: STORABLE_TEXT_PATTERN,
});
const Mids = Type.Array(ClientMid, { minItems: 1, maxItems: MAX_MIDS_PER_FRAME });

export const AckFrame = Type.Object(
  { type: Type.Literal('ack'), mids: Mids },
  { $id: 'AckFrame', description: 'This device received these deliverables' },
);
export type AckFrame = Static<typeof AckFrame>;

export const ReadFrame = Type.Object(
  {
    type: Type.Literal('read'),
    /** Optional (an addition to PROTOCOL.md): with it the read is answered `accepted`, as a message is. */
    id: Type.Optional(ClientMessageId),
    to: UserId,
    mids: Mids,
  },
  {
    $id: 'ReadFrame',
    description: 'Read receipt, forwarded to `to`; with an `id`, answered `accepted` once stored',
  },
);
export type ReadFrame = Static<typeof ReadFrame>;

const Members = Type.Array(UserId, { maxItems: MAX_GROUP_MEMBERS_PER_OP });
/** Any text but control characters (Postgres cannot store U+0000, and a name is one line). */
export const GroupName = Type.String({
  minLength: 1,
  maxLength: 200,
  pattern: STORABLE_TEXT_PATTERN,
  description: 'A group name: 1-200 characters, no control characters',
});

const groupOp = <Op extends string, P extends TProperties>(op: Op, props: P) =>
  Type.Object({
    type: Type.Literal('group'),
    id: ClientMessageId,
    op: Type.Literal(op),
    group: GroupId,
    ...props,
  });

export const GroupCreateFrame = groupOp('create', { name: GroupName, members: Type.Optional(Members) });
export const GroupAddFrame = groupOp('add', {
  members: Type.Array(UserId, { minItems: 1, maxItems: MAX_GROUP_MEMBERS_PER_OP }),
});
export const GroupRemoveFrame = groupOp('remove', {
  members: Type.Array(UserId, { minItems: 1, maxItems: MAX_GROUP_MEMBERS_PER_OP }),
});
export const GroupLeaveFrame = groupOp('leave', {});
export const GroupRenameFrame = groupOp('rename', { name: GroupName });

export const GROUP_OPS = ['create', 'add', 'remove', 'leave', 'rename'] as const;
export type GroupOp = (typeof GROUP_OPS)[number];

export const GroupFrame = Type.Union(
  [GroupCreateFrame, GroupAddFrame, GroupRemoveFrame, GroupLeaveFrame, GroupRenameFrame],
  { $id: 'GroupFrame', description: 'Asynchronous group operation' },
);
export type GroupFrame = Static<typeof GroupFrame>;

export const TypingFrame = Type.Object(
  { type: Type.Literal('typing'), to: Recipient, chat: Type.Optional(ChatKind) },
  { $id: 'TypingFrame', description: 'Ephemeral: delivered only if online, never stored or retried' },
);
export type TypingFrame = Static<typeof TypingFrame>;

export const PingFrame = Type.Object({ type: Type.Literal('ping') }, { $id: 'PingFrame' });
export type PingFrame = Static<typeof PingFrame>;

export const ClientFrame = Type.Union([
  MessageFrame,
  AckFrame,
  ReadFrame,
  GroupFrame,
  TypingFrame,
  PingFrame,
]);
export type ClientFrame = Static<typeof ClientFrame>;

/**
 * The client's id of a frame that has one (message, group, read when given): the frame is answered
 * `accepted` with it and its mid, on either edge. An `id` on any other frame (an ack) is an
 * unchecked extra field.
 */
export function clientIdOf(frame: ClientFrame): string | undefined {
  return frame.type === 'message' || frame.type === 'group' || frame.type === 'read' ? frame.id : undefined;
}

/** Frames accepted by `POST /v1/send` (no typing or ping there). */
export const SENDABLE_TYPES = ['message', 'ack', 'read', 'group'] as const;
export type SendableFrame = MessageFrame | AckFrame | ReadFrame | GroupFrame;
