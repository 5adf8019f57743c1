import { Type } from '@sinclair/typebox';
import { KafkaSettingsSchema } from '@parley/kafka';
import { DatabaseConfig } from '@parley/postgres';
import { CommonConfig, InternalConfig, serviceUrl } from '@parley/service-kit';

export const GroupMessageRouterConfig = Type.Object({
  ...CommonConfig,
  ...KafkaSettingsSchema,
  ...DatabaseConfig,
  ...InternalConfig,
  PORT: Type.Integer({ minimum: 0, maximum: 65535, default: 9102, description: 'Probes and metrics' }),
  GROUP_URL: serviceUrl({
    default: 'http://127.0.0.1:9104',
    description: "group-ms's internal API",
  }),
  MEMBERSHIP_CACHE_TTL_MS: Type.Integer({
    minimum: 0,
    default: 30_000,
    description: 'How long a cached member list is trusted without a change event',
  }),
  MEMBERSHIP_CACHE_MAX_GROUPS: Type.Integer({
    minimum: 1,
    default: 10_000,
    description: 'Groups kept in the membership cache',
  }),
  MEMBERSHIP_CACHE_MAX_MEMBERS: Type.Integer({
    minimum: 1,
    default: 1_000_000,
    description:
      'Members of all groups in the membership cache together (about 150 bytes each: the default holds about 150 MB)',
  }),
  DELIVERY_BATCH_SIZE: Type.Integer({
    minimum: 1,
    maximum: 2000,
    default: 500,
    description: 'Deliveries (recipients) per publish call during fan-out',
  }),
});
