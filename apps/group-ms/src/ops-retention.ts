import { TProperties, Type } from '@sinclair/typebox';

/** How long group-ms remembers an applied op by default: a replayed op older than that is applied again. */
export const DEFAULT_GROUP_OPS_KEEP_DAYS = 8;
/** How long a report of a user is kept for moderators by default. */
export const DEFAULT_REPORTS_KEEP_DAYS = 90;

/** In a module of its own, so the DLQ tool reads the same setting without group-ms's dependencies. */
export const GroupOpsKeepConfig = {
  GROUP_OPS_KEEP_DAYS: Type.Number({
    exclusiveMinimum: 0,
    default: DEFAULT_GROUP_OPS_KEEP_DAYS,
    description:
      'How long an applied group op is remembered, so a replay of it changes nothing (keep above the group-commands topic retention); a group its last member left, and a group message as routed, are forgotten as long after',
  }),
} satisfies TProperties;
