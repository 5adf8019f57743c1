import { Type } from '@sinclair/typebox';
import { KafkaSettingsSchema } from '@parley/kafka';
import { DatabaseConfig } from '@parley/postgres';
import { CommonConfig } from '@parley/service-kit';

export const MessageRouterConfig = Type.Object({
  ...CommonConfig,
  ...KafkaSettingsSchema,
  // group-ms's database: the router reads its `user_blocks` and `user_block_changes` (read-only).
  ...DatabaseConfig,
  PORT: Type.Integer({ minimum: 0, maximum: 65535, default: 9101, description: 'Probes and metrics' }),
});
