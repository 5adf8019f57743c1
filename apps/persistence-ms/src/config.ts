import { Type } from '@sinclair/typebox';
import { KafkaSettingsSchema } from '@parley/kafka';
import { DatabaseConfig } from '@parley/postgres';
import { CommonConfig, InternalConfig } from '@parley/service-kit';

export const PersistenceConfig = Type.Object({
  ...CommonConfig,
  ...KafkaSettingsSchema,
  ...DatabaseConfig,
  ...InternalConfig,
  PGLITE_DATA_DIR: Type.String({
    default: '.data/pglite/persistence-ms',
    description: 'Embedded PGlite data directory',
  }),
  PORT: Type.Integer({
    minimum: 0,
    maximum: 65535,
    default: 9105,
    description: 'Internal API, probes and metrics',
  }),
  RETENTION_DAYS: Type.Number({
    exclusiveMinimum: 0,
    default: 30,
    description: 'Undelivered deliverables older than this are purged',
  }),
  ACK_TOMBSTONE_DAYS: Type.Number({
    exclusiveMinimum: 0,
    default: 8,
    description:
      'How long an acked mid is remembered, so a late copy is not stored again (keep above the offline topic retention)',
  }),
  PURGE_INTERVAL_MS: Type.Integer({
    minimum: 1000,
    default: 3_600_000,
    description: 'How often the retention purge runs',
  }),
  REPLAY_MAX: Type.Integer({
    minimum: 1,
    default: 1000,
    description: 'Most stored deliverables handed back to delivery per connecting device',
  }),
  CONNECT_RACE_MS: Type.Integer({
    minimum: 0,
    default: 30_000,
    description:
      "A deliverable that went offline this soon after its user connected (by the events' times) is handed back to delivery: it raced the connect",
  }),
});
