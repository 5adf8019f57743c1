import { Type } from '@sinclair/typebox';
import { KafkaSettingsSchema } from '@parley/kafka';
import { DatabaseConfig } from '@parley/postgres';
import { CommonConfig, InternalConfig } from '@parley/service-kit';
import { MAX_REPORTS_PER_DAY } from '@parley/contracts';
import { DEFAULT_REPORTS_KEEP_DAYS, GroupOpsKeepConfig } from './ops-retention';

export const DEFAULT_GROUP_MAX_MEMBERS = 1024;
export const DEFAULT_GROUP_MAX_GROUPS_PER_USER = 1000;

export const GroupMsConfig = Type.Object({
  ...CommonConfig,
  ...KafkaSettingsSchema,
  ...DatabaseConfig,
  ...InternalConfig,
  PORT: Type.Integer({
    minimum: 0,
    maximum: 65535,
    default: 9104,
    description: 'Internal group API, probes and metrics',
  }),
  GROUP_MAX_MEMBERS: Type.Integer({
    minimum: 1,
    default: DEFAULT_GROUP_MAX_MEMBERS,
    description: 'Most members a group may have',
  }),
  GROUP_MAX_GROUPS_PER_USER: Type.Integer({
    minimum: 1,
    default: DEFAULT_GROUP_MAX_GROUPS_PER_USER,
    description:
      'Most groups one user may be in: a create or add that would make someone a member of more is refused (too_many_groups)',
  }),
  ...GroupOpsKeepConfig,
  REPORTS_KEEP_DAYS: Type.Number({
    minimum: 1, // a report counts toward its reporter's daily limit for a day
    default: DEFAULT_REPORTS_KEEP_DAYS,
    description: 'How long a report of a user (POST /v1/reports) is kept for moderators',
  }),
  MAX_REPORTS_PER_DAY: Type.Integer({
    minimum: 1,
    default: MAX_REPORTS_PER_DAY,
    description: 'Reports one user may file in 24 hours (more are refused rate_limited)',
  }),
  PURGE_INTERVAL_MS: Type.Integer({
    minimum: 1000,
    default: 3_600_000,
    description: 'How often the retention purge runs',
  }),
});
