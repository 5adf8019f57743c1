import { Static, Type } from '@sinclair/typebox';
import { ConnId, Timestamp, UserId } from './ids';
import { REPORT_LIST_MAX_LIMIT, REPORT_PAGE_MAX_BYTES } from './limits';
import { ReportedMessage, ReportReason } from './rest';
import { GroupCommandEvent } from './events';
import { PushedFrame } from './server-frames';

/**
 * Internal HTTP between services. Never exposed publicly: every call carries the internal shared
 * secret, and calls on behalf of a user carry that user's id (already authenticated by an edge).
 */
export const INTERNAL_SECRET_HEADER = 'x-parley-internal-secret';
export const INTERNAL_USER_HEADER = 'x-parley-user';
/**
 * On a refusal for a missing or wrong internal secret: the calling service is misconfigured (its
 * INTERNAL_SECRET differs), which an edge must not pass on to its user as that user's `forbidden`.
 */
export const INTERNAL_REFUSED_HEADER = 'x-parley-internal-refused';
export const MAX_GATEWAY_BATCH = 1000;
/**
 * The largest /send request body session-ms makes (it cuts a larger call in two, in order), and
 * one every gateway takes, whatever its MAX_FRAME_BYTES: what it pushes is not bounded by that (a
 * group notice names up to 1,024 members, some 69 KB; a message may come through a rest-gateway
 * allowing larger frames).
 */
export const MAX_GATEWAY_SEND_BYTES = 8 * 1024 * 1024;
/**
 * Connection ids in one /send delivery: one user's sockets on one gateway as session-ms knows
 * them, the live ones (at most the gateway's MAX_CONNECTIONS_PER_USER, 16 by default) and those
 * whose connection-down was lost (forgotten at the next push that finds them missing). 16 times
 * that default; session-ms splits a longer list (a gateway set to take more) over several deliveries.
 */
export const MAX_DELIVERY_CONN_IDS = 256;

/** A pushed frame, written once per request under `$defs` (its schemas carry `$id`s). */
const SharedFrame = Type.Unsafe<PushedFrame>({ $ref: '#/$defs/frame' });

const GatewayDeliverySchema = Type.Object({
  to: UserId,
  connIds: Type.Optional(
    Type.Array(ConnId, {
      maxItems: MAX_DELIVERY_CONN_IDS,
      description: 'Only these connections; all of the user’s otherwise',
    }),
  ),
  frame: Type.Union([
    Type.Integer({ minimum: 0, maximum: MAX_GATEWAY_BATCH - 1, description: 'Index into `frames`' }),
    SharedFrame,
  ]),
});
/** What session-ms hands its gateway client: one delivery, its frame in full. */
export type GatewayDelivery = Omit<Static<typeof GatewayDeliverySchema>, 'frame'> & { frame: PushedFrame };

/**
 * One call's deliveries. A frame written to many users (a group message's members) travels once,
 * in `frames`, and each delivery names it by index; a delivery may also carry its frame inline.
 */
export const GatewaySendRequest = Type.Object(
  {
    frames: Type.Optional(Type.Array(SharedFrame, { maxItems: MAX_GATEWAY_BATCH })),
    deliveries: Type.Array(GatewayDeliverySchema, { minItems: 1, maxItems: MAX_GATEWAY_BATCH }),
  },
  { $id: 'GatewaySendRequest', $defs: { frame: PushedFrame } },
);
export type GatewaySendRequest = {
  frames?: PushedFrame[];
  deliveries: Array<Omit<GatewayDelivery, 'frame'> & { frame: PushedFrame | number }>;
};

export const GatewaySendResponse = Type.Object(
  {
    results: Type.Array(
      Type.Object({
        written: Type.Integer({ minimum: 0, description: 'Sockets written to' }),
        missing: Type.Optional(
          Type.Array(Type.String(), {
            description:
              'Of the `connIds` asked for, those this gateway does not hold (closed, or lost in a crash)',
          }),
        ),
      }),
    ),
  },
  { $id: 'GatewaySendResponse' },
);
export type GatewaySendResponse = Static<typeof GatewaySendResponse>;
export type GatewaySendResult = GatewaySendResponse['results'][number];

/**
 * POST /announce: the gateway publishes a connection-up for each of its open connections again, in
 * the background (session-ms did not know it: its store lost its state, or forgot it after a long
 * silence). 202 with how many it holds.
 */
export const GatewayAnnounceResponse = Type.Object(
  { connections: Type.Integer({ minimum: 0, description: 'Open connections being announced' }) },
  { $id: 'GatewayAnnounceResponse' },
);
export type GatewayAnnounceResponse = Static<typeof GatewayAnnounceResponse>;

/** Group ops a router met in the group topic, for group-ms to apply in this order before it routes on. */
export const MAX_GROUP_COMMANDS = 500;
/** An event's place in the group topic: partition, record offset, and place in a packed record. */
export const TopicPosition = Type.Object({
  partition: Type.Integer({ minimum: 0 }),
  offset: Type.Integer({ minimum: 0 }),
  index: Type.Integer({ minimum: 0 }),
});
export type TopicPosition = Static<typeof TopicPosition>;

export const GroupCommandsRequest = Type.Object(
  {
    commands: Type.Array(GroupCommandEvent, { minItems: 1, maxItems: MAX_GROUP_COMMANDS }),
    /**
     * Each command's place in the group topic (same length and order as `commands`). group-ms
     * records the place of an op that changes a group as the group's last piped op: a router that
     * handles a batch again (offsets not committed before a crash or a rebalance) skips the group's
     * events placed before it, which were routed before it was applied. Optional: routers of earlier
     * releases do not send it, and group-ms of earlier releases ignores it.
     */
    positions: Type.Optional(Type.Array(TopicPosition, { minItems: 1, maxItems: MAX_GROUP_COMMANDS })),
  },
  { $id: 'GroupCommandsRequest' },
);
export type GroupCommandsRequest = Static<typeof GroupCommandsRequest>;

export const GroupCommandsResponse = Type.Object(
  { applied: Type.Integer({ minimum: 0, description: 'Commands applied, refused or found applied before' }) },
  { $id: 'GroupCommandsResponse' },
);

/** What one service erased of the acting user's data (`DELETE /internal/account`): how many items. */
export const ErasedCount = Type.Object(
  { erased: Type.Integer({ minimum: 0, description: 'Items of the user this service held and erased now' }) },
  { $id: 'ErasedCount' },
);
export type ErasedCount = Static<typeof ErasedCount>;

/**
 * `GET /internal/blocks/blockers?users=a,b` (group-ms): which of these users blocked the acting
 * user. The rest-gateway hides their presence from that user.
 */
export const BlockersResponse = Type.Object(
  { blockers: Type.Array(UserId, { description: 'Those of the users asked about who blocked the caller' }) },
  { $id: 'BlockersResponse' },
);
export type BlockersResponse = Static<typeof BlockersResponse>;

/** A report as moderators read it (group-ms's internal `GET /internal/reports`). */
export const ReportRecord = Type.Object(
  {
    id: Type.String(),
    position: Type.Integer({ minimum: 1, description: "Its place in filing order: the next page's `after`" }),
    reporter: UserId,
    user: UserId,
    reason: ReportReason,
    comment: Type.Optional(Type.String()),
    messages: Type.Array(ReportedMessage),
    at: Timestamp,
  },
  { $id: 'ReportRecord' },
);
export type ReportRecord = Static<typeof ReportRecord>;
export const ReportListQuery = Type.Object(
  {
    after: Type.Optional(
      Type.Integer({
        minimum: 0,
        // Past a bigint Postgres refused the comparison (a 500); past this, a number is not exact.
        maximum: Number.MAX_SAFE_INTEGER,
        description: 'The last `position` already read',
      }),
    ),
    limit: Type.Optional(
      Type.Integer({
        minimum: 1,
        maximum: REPORT_LIST_MAX_LIMIT,
        description: 'Reports a page (100 by default)',
      }),
    ),
  },
  { $id: 'ReportListQuery' },
);
export type ReportListQuery = Static<typeof ReportListQuery>;
export const ReportList = Type.Object(
  {
    reports: Type.Array(ReportRecord, { description: 'Oldest filed first' }),
    next: Type.Optional(
      Type.Integer({
        description: `The page's last position when it stopped at \`limit\` or at ${REPORT_PAGE_MAX_BYTES} bytes of comments and quoted messages: ask again with \`after\``,
      }),
    ),
  },
  { $id: 'ReportList' },
);
export type ReportList = Static<typeof ReportList>;
