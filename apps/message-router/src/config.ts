import { Type } from '@sinclair/typebox';
import { KafkaSettingsSchema } from '@parley/kafka';
import { CommonConfig } from '@parley/service-kit';

export const MessageRouterConfig = Type.Object({
  ...CommonConfig,
  ...KafkaSettingsSchema,
  PORT: Type.Integer({ minimum: 0, maximum: 65535, default: 9101, description: 'Probes and metrics' }),
});
