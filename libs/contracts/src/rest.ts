import { Static, Type } from '@sinclair/typebox';
import { CLIENT_ID_PATTERN, DeviceId, GroupId, Mid, Timestamp, USER_ID_PATTERN, UserId } from './ids';
import { ParleyError } from './errors';
import {
  AckFrame,
  GroupFrame,
  GroupName,
  MessageFrame,
  ReadFrame,
  STORABLE_LINES_PATTERN,
} from './client-frames';
import { Deliverable, ErrorCodeSchema } from './server-frames';
import {
  GROUP_LIST_MAX_LIMIT,
  GROUP_PAGE_MAX_BYTES,
  MAX_BLOCKS_PER_USER,
  MAX_MUTES_PER_USER,
  MAX_GROUP_MEMBERS_PER_OP,
  MAX_PRESENCE_USERS,
  MAX_REPORT_COMMENT_LENGTH,
  MAX_REPORTED_MESSAGES,
  MAX_SEND_BATCH,
  SYNC_MAX_LIMIT,
  SYNC_PAGE_MAX_BYTES,
} from './limits';

/** REST bodies of the rest-gateway (`/v1`). */

export const ErrorBody = Type.Object(
  { error: Type.Object({ code: ErrorCodeSchema, message: Type.String() }) },
  { $id: 'ErrorBody' },
);
export type ErrorBody = Static<typeof ErrorBody>;

export const SendableFrameSchema = Type.Union([MessageFrame, AckFrame, ReadFrame, GroupFrame], {
  $id: 'SendableFrame',
});

/** One frame, or an array of up to 100. Each element is validated on its own (see `validateSendableFrame`). */
export const SendRequest = Type.Union(
  [
    Type.Object({}, { additionalProperties: true }),
    Type.Array(Type.Unknown(), { minItems: 1, maxItems: MAX_SEND_BATCH }),
  ],
  {
    $id: 'SendRequest',
    description: 'One client frame (`message`, `ack`, `read`, `group`) or an array of up to 100',
  },
);

export const SendResult = Type.Union([
  Type.Object({
    index: Type.Integer(),
    status: Type.Literal('accepted'),
    id: Type.Optional(Type.String()),
    mid: Type.Optional(Mid),
  }),
  Type.Object({
    index: Type.Integer(),
    status: Type.Literal('rejected'),
    id: Type.Optional(Type.String()),
    code: ErrorCodeSchema,
    message: Type.String(),
    retryAfterMs: Type.Optional(
      Type.Integer({ minimum: 0, description: 'With rate_limited: when the frame would be taken again' }),
    ),
  }),
]);
export type SendResult = Static<typeof SendResult>;

export const SendResponse = Type.Object({ results: Type.Array(SendResult) }, { $id: 'SendResponse' });
export type SendResponse = Static<typeof SendResponse>;

export const SyncQuery = Type.Object(
  {
    after: Type.Optional(
      Type.String({ maxLength: 200, description: 'Opaque cursor from a previous `next`' }),
    ),
    limit: Type.Optional(
      Type.Integer({
        minimum: 1,
        maximum: SYNC_MAX_LIMIT,
        default: 100,
        description: `At most this many; fewer once their frames reach ${SYNC_PAGE_MAX_BYTES / 1024 / 1024} MiB (one at least): page on while \`next\` is not null`,
      }),
    ),
  },
  { $id: 'SyncQuery' },
);
export type SyncQuery = Static<typeof SyncQuery>;

export const SyncResponse = Type.Object(
  { messages: Type.Array(Deliverable), next: Type.Union([Type.String(), Type.Null()]) },
  { $id: 'SyncResponse', description: 'What the user has not acked yet, oldest first' },
);
export type SyncResponse = Static<typeof SyncResponse>;

export const Group = Type.Object(
  {
    id: GroupId,
    name: Type.String(),
    members: Type.Array(UserId),
    admins: Type.Array(UserId),
    createdAt: Timestamp,
  },
  { $id: 'Group' },
);
export type Group = Static<typeof Group>;

export const CreateGroupBody = Type.Object(
  {
    id: Type.Optional(GroupId),
    name: GroupName,
    members: Type.Optional(
      Type.Array(UserId, {
        maxItems: MAX_GROUP_MEMBERS_PER_OP,
        description: 'Members besides the creator; none when left out, as in the WebSocket create',
      }),
    ),
  },
  { $id: 'CreateGroupBody' },
);
export type CreateGroupBody = Static<typeof CreateGroupBody>;

export const GroupList = Type.Object(
  {
    groups: Type.Array(Group),
    next: Type.Optional(
      Type.Union([Type.String(), Type.Null()], {
        description: 'With `limit`: the cursor of the next page (`after`), null on the last',
      }),
    ),
  },
  { $id: 'GroupList', description: 'The groups the user belongs to, oldest first' },
);
export type GroupList = Static<typeof GroupList>;
export const GroupListQuery = Type.Object(
  {
    after: Type.Optional(
      Type.String({ maxLength: 400, description: 'Opaque cursor from a previous `next`' }),
    ),
    limit: Type.Optional(
      Type.Integer({
        minimum: 1,
        maximum: GROUP_LIST_MAX_LIMIT,
        description: `Groups per page (100 when only \`after\` is given), fewer once their groups reach ${GROUP_PAGE_MAX_BYTES / 1024 / 1024} MiB (one at least): page on while \`next\` is not null; with neither, every group comes at once, with no \`next\``,
      }),
    ),
  },
  { $id: 'GroupListQuery' },
);
export type GroupListQuery = Static<typeof GroupListQuery>;
export const GroupParams = Type.Object({ id: GroupId });
export const GroupMemberParams = Type.Object({ id: GroupId, user: UserId });
export const AddMembersBody = Type.Object(
  { members: Type.Array(UserId, { minItems: 1, maxItems: MAX_GROUP_MEMBERS_PER_OP }) },
  { $id: 'AddMembersBody' },
);
export type AddMembersBody = Static<typeof AddMembersBody>;

export const Platform = Type.Union([Type.Literal('android'), Type.Literal('ios'), Type.Literal('web')]);
export type Platform = Static<typeof Platform>;
export const DeviceParams = Type.Object({ deviceId: DeviceId });
export const RegisterDeviceBody = Type.Object(
  {
    token: Type.String({
      minLength: 1,
      maxLength: 4096,
      pattern: '^[!-~]+$',
      description: 'The FCM registration token: printable ASCII, no spaces',
    }),
    platform: Platform,
  },
  { $id: 'RegisterDeviceBody' },
);
export type RegisterDeviceBody = Static<typeof RegisterDeviceBody>;

export const BlockParams = Type.Object({ user: UserId });
export const BlockList = Type.Object(
  {
    blocked: Type.Array(UserId, {
      maxItems: MAX_BLOCKS_PER_USER,
      description: 'The users blocked, oldest block first',
    }),
  },
  {
    $id: 'BlockList',
    description:
      'The users whose 1:1 messages, typing notices and read receipts this user does not receive, and who see this user offline',
  },
);
export type BlockList = Static<typeof BlockList>;

/** A conversation to mute: a 1:1 chat with a user, or a group. */
export const MuteParams = Type.Object({
  chat: Type.Union([Type.Literal('direct'), Type.Literal('group')], { description: 'direct or group' }),
  id: Type.String({ pattern: USER_ID_PATTERN, description: 'The other user (direct), or the group' }),
});
export type MuteParams = Static<typeof MuteParams>;
export const MuteQuery = Type.Object(
  {
    until: Type.Optional(
      Type.Integer({
        minimum: 0,
        maximum: Number.MAX_SAFE_INTEGER,
        description: 'Muted until this time (ms since the epoch); without it, until unmuted',
      }),
    ),
  },
  { $id: 'MuteQuery' },
);
export type MuteQuery = Static<typeof MuteQuery>;
export const Mute = Type.Object({
  chat: MuteParams.properties.chat,
  id: MuteParams.properties.id,
  until: Type.Union([Timestamp, Type.Null()], { description: 'null: until unmuted' }),
});
export type Mute = Static<typeof Mute>;
export const MuteList = Type.Object(
  {
    mutes: Type.Array(Mute, {
      maxItems: MAX_MUTES_PER_USER,
      description: 'The conversations muted now, oldest mute first',
    }),
  },
  {
    $id: 'MuteList',
    description: 'Conversations whose messages send no push notification to this user (they still arrive)',
  },
);
export type MuteList = Static<typeof MuteList>;

/** Why a user is reported (App Store guideline 1.2: a way to report objectionable content). */
export const REPORT_REASONS = [
  'spam',
  'harassment',
  'hate',
  'sexual',
  'violence',
  'self_harm',
  'impersonation',
  'other',
] as const;
export const ReportReason = Type.Union(
  REPORT_REASONS.map((reason) => Type.Literal(reason)),
  { description: `Why: ${REPORT_REASONS.join(', ')}` },
);
export type ReportReason = Static<typeof ReportReason>;
export const ReportedMessage = Type.Object(
  {
    mid: Mid,
    body: Type.Optional(Type.Unknown({ description: 'The message body as the reporter received it' })),
    sentAt: Type.Optional(Timestamp),
  },
  { additionalProperties: false },
);
export type ReportedMessage = Static<typeof ReportedMessage>;
export const ReportBody = Type.Object(
  {
    id: Type.Optional(
      Type.String({
        pattern: CLIENT_ID_PATTERN,
        description:
          'Your id for this report, unique per reporter: sent again (a retry after a timeout or a 503), it files nothing new and answers the first receipt; its report id is then `<you>:<id>`',
      }),
    ),
    user: UserId,
    reason: ReportReason,
    comment: Type.Optional(
      Type.String({
        maxLength: MAX_REPORT_COMMENT_LENGTH,
        pattern: STORABLE_LINES_PATTERN,
        description: "The reporter's own words: lines of text, no other control characters",
      }),
    ),
    messages: Type.Optional(
      Type.Array(ReportedMessage, {
        maxItems: MAX_REPORTED_MESSAGES,
        description:
          'Messages from the reported user, quoted as the reporter received them (the server keeps no delivered message, so these are the evidence; a moderator sees them as the reporter sent them)',
      }),
    ),
  },
  { $id: 'ReportBody', additionalProperties: false },
);
export type ReportBody = Static<typeof ReportBody>;
export const ReportReceipt = Type.Object(
  { id: Type.String({ description: 'The report, for a later reference' }), at: Timestamp },
  { $id: 'ReportReceipt' },
);
export type ReportReceipt = Static<typeof ReportReceipt>;

export const PresenceQuery = Type.Object(
  {
    users: Type.String({
      minLength: 1,
      maxLength: 65 * MAX_PRESENCE_USERS,
      description: 'Comma-separated user ids',
    }),
  },
  { $id: 'PresenceQuery' },
);
const userIdPattern = new RegExp(USER_ID_PATTERN);

/** A `users` query (presence, a user's blockers): ids, repeats and empty names dropped, at most MAX_PRESENCE_USERS. */
export function parseUserList(users: string): string[] {
  const list = [
    ...new Set(
      users
        .split(',')
        .map((u) => u.trim())
        .filter(Boolean),
    ),
  ];
  if (list.length > MAX_PRESENCE_USERS)
    throw new ParleyError('invalid_request', `users: at most ${MAX_PRESENCE_USERS} users`);
  const bad = list.find((u) => !userIdPattern.test(u));
  if (bad !== undefined)
    throw new ParleyError('invalid_request', `users: ${JSON.stringify(bad)} must match ${USER_ID_PATTERN}`);
  return list;
}

export const Presence = Type.Object({
  user: UserId,
  online: Type.Boolean(),
  lastSeen: Type.Union([Timestamp, Type.Null()]),
});
export type Presence = Static<typeof Presence>;
export const PresenceResponse = Type.Object({ presence: Type.Array(Presence) }, { $id: 'PresenceResponse' });
export type PresenceResponse = Static<typeof PresenceResponse>;

const erasedItems = (description: string) => Type.Integer({ minimum: 0, description });
/** `DELETE /v1/account`: what was erased of the user's data, per kind; all zero when called again. */
export const AccountErased = Type.Object(
  {
    erased: Type.Object({
      groups: erasedItems('Groups the user left (their other members get the usual leave notice)'),
      devices: erasedItems('Push registrations removed'),
      pending: erasedItems('Deliverables to the user awaiting an ack, dropped (not stored)'),
      stored: erasedItems('Deliverables stored for the user (not yet acked), deleted'),
    }),
  },
  { $id: 'AccountErased' },
);
export type AccountErased = Static<typeof AccountErased>;

export const DevTokenBody = Type.Object({ user: UserId }, { $id: 'DevTokenBody' });
export type DevTokenBody = Static<typeof DevTokenBody>;
export const DevTokenResponse = Type.Object({ token: Type.String() }, { $id: 'DevTokenResponse' });

export const HealthResponse = Type.Object({
  status: Type.String(),
  checks: Type.Optional(Type.Record(Type.String(), Type.String())),
});
