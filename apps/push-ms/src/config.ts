import { Type } from '@sinclair/typebox';
import { KafkaSettingsSchema } from '@parley/kafka';
import { DatabaseConfig } from '@parley/postgres';
import { CommonConfig, InternalConfig } from '@parley/service-kit';

export const PushConfig = Type.Object({
  ...CommonConfig,
  ...KafkaSettingsSchema,
  ...DatabaseConfig,
  ...InternalConfig,
  PGLITE_DATA_DIR: Type.String({
    default: '.data/pglite/push-ms',
    description: 'Embedded PGlite data directory',
  }),
  PORT: Type.Integer({
    minimum: 0,
    maximum: 65535,
    default: 9106,
    description: 'Internal API, probes and metrics',
  }),
  FCM_SERVICE_ACCOUNT: Type.Optional(
    Type.String({
      minLength: 1,
      description:
        'Firebase service-account JSON, or the path of a file holding it; the log provider when unset',
    }),
  ),
  PUSH_WINDOW_MS: Type.Integer({
    minimum: 0,
    default: 2000,
    description: 'Messages to one user within this window make one notification',
  }),
  PUSH_INCLUDE_BODY: Type.Boolean({
    default: false,
    description: 'Put the latest message text in the notification',
  }),
  PUSH_DEDUP_MS: Type.Integer({
    minimum: 0,
    default: 600_000,
    description:
      'A message announced once is not announced again within this time (redelivery, replays on reconnect)',
  }),
  PUSH_MAX_AGE_MS: Type.Integer({
    minimum: 1,
    default: 600_000,
    description:
      'A message that went offline longer ago than this is not announced (a backlog read after an outage, or by a new consumer group)',
  }),
  PUSH_MAX_ATTEMPTS: Type.Integer({
    minimum: 1,
    default: 4,
    description:
      'Tries per device for transient FCM failures (a 503 counts once: firebase-admin retries it itself; after a 429 every push waits a minute)',
  }),
  PUSH_RETRY_BASE_MS: Type.Integer({
    minimum: 1,
    default: 500,
    description: 'First retry backoff, doubled per retry',
  }),
});
