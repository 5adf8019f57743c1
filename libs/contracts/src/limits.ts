import { Type } from '@sinclair/typebox';

/** Protocol defaults; services may configure their own within these meanings. */
export const DEFAULT_MAX_FRAME_BYTES = 64 * 1024;
export const MAX_SEND_BATCH = 100;
export const MAX_REST_BODY_BYTES = 1024 * 1024;
export const MAX_BODY_DEPTH = 32;
export const MAX_MIDS_PER_FRAME = 500;
export const MAX_GROUP_MEMBERS_PER_OP = 1024;
/**
 * Recipients of one `deliver-many` event. With the largest frame a gateway can allow (512 KiB) and
 * 500 of the longest user ids, an event is about 0.55 MiB, under Kafka's default 1 MiB record.
 */
export const MAX_RECIPIENTS_PER_EVENT = 500;
export const SYNC_DEFAULT_LIMIT = 100;
export const SYNC_MAX_LIMIT = 500;
/**
 * A sync page stops once its frames reach this (one frame at least), whatever its `limit`: 500 of
 * 64 KiB made a 33 MB answer, and rest-gateway held some 90 MB for each such call under way (eight
 * at once took it to 805 MB, past its container's 512 MiB).
 */
export const SYNC_PAGE_MAX_BYTES = 1024 * 1024;
/** Groups in one page of `GET /v1/groups?after=` without a `limit`, and the most a `limit` may ask. */
export const GROUP_LIST_DEFAULT_LIMIT = 100;
export const GROUP_LIST_MAX_LIMIT = 200;
/**
 * A page of `GET /v1/groups` stops once its groups reach about this (one group at least), whatever
 * its `limit`: 200 full groups (1,024 members of 64-character ids) made a 13.8 MB answer, which
 * took group-ms from 150 to 370 MB for one call (four at once ran it out of its 384 MiB heap) and
 * rest-gateway past its container's 512 MiB at 17 at once.
 */
export const GROUP_PAGE_MAX_BYTES = 1024 * 1024;
export const MAX_PRESENCE_USERS = 200;
/** Users one user may block: `GET /v1/blocks` answers them all at once. */
export const MAX_BLOCKS_PER_USER = 1000;
/** Conversations one user may mute: `GET /v1/mutes` answers them all at once. */
export const MAX_MUTES_PER_USER = 1000;
/** Reports one user may file in 24 hours: more is abuse of the moderators, not a report. */
export const MAX_REPORTS_PER_DAY = 20;
/** Messages one report may quote, and the length of its comment. */
export const MAX_REPORTED_MESSAGES = 20;
export const MAX_REPORT_COMMENT_LENGTH = 1000;
/** Reports a moderator's page may hold. */
export const REPORT_LIST_MAX_LIMIT = 500;
/**
 * A moderator's page stops once its reports' comments and quoted messages reach this (one report at
 * least): a report may quote up to a REST body's 1 MiB; a page of 100 such (the default) took
 * group-ms to 740 MB of memory (its container has 512 MiB), one of 500 out of its 384 MiB heap.
 */
export const REPORT_PAGE_MAX_BYTES = 4 * 1024 * 1024;
/**
 * A typing notice older than this is not passed on: it is about the moment. The routers drop one
 * by its `sentAt` (a backlog of the inbound or group topic), session-ms one written to the delivery
 * topic that long ago (a backlog there, a re-read).
 */
export const TYPING_NOTICE_MAX_AGE_MS = 30_000;

/**
 * A gateway's MAX_FRAME_BYTES setting. A frame travels as one Kafka record (with its envelope), so
 * it must stay well under a broker's `message.max.bytes` (1 MiB by default).
 */
export const MaxFrameBytesSetting = Type.Integer({
  minimum: 256,
  maximum: 512 * 1024,
  default: DEFAULT_MAX_FRAME_BYTES,
  description: 'Largest client frame; a frame is one Kafka record, under message.max.bytes',
});
