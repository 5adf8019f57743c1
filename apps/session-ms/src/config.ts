import { Type } from '@sinclair/typebox';
import { KafkaSettingsSchema } from '@parley/kafka';
import { CommonConfig, InternalConfig, readableFile } from '@parley/service-kit';

export const SessionConfig = Type.Object({
  ...CommonConfig,
  ...KafkaSettingsSchema,
  ...InternalConfig,
  PORT: Type.Integer({
    minimum: 0,
    maximum: 65535,
    default: 9103,
    description: 'Internal API, probes, metrics',
  }),
  REDIS_URL: Type.Optional(
    Type.String({
      pattern: '^rediss?://',
      description:
        'Redis; in-process store when unset (one replica only; a stop hands what awaits an ack to storage, a crash loses it)',
    }),
  ),
  REDIS_TLS_CA_FILE: Type.Optional(
    readableFile({
      description:
        "PEM file of the CA that signed Redis's TLS certificate, where Node does not trust it by itself (Memorystore); implies TLS",
    }),
  ),
  REDIS_KEY_PREFIX: Type.String({
    default: 'parley:session:',
    description: 'Prefix of every key session-ms writes',
  }),
  REDIS_WAIT_REPLICAS: Type.Integer({
    minimum: 0,
    default: 0,
    description:
      "Replicas of Redis that must have session-ms's writes (WAIT) before the delivery offsets that made them are committed; 0: not waited for. Set it with a replica to fail over to: a failover to one that lagged then loses no deliverable",
  }),
  REDIS_WAIT_TIMEOUT_MS: Type.Integer({
    minimum: 1,
    maximum: 4000,
    default: 1000,
    description:
      'How long one WAIT (REDIS_WAIT_REPLICAS) waits for the replicas; short of them, the commit is tried again the next interval (500 ms)',
  }),
  ACK_TIMEOUT_MS: Type.Integer({
    minimum: 10,
    default: 5000,
    description:
      'Wait for an ack before pushing again, counted on how far acks have been read (a backlog does not trigger retries)',
  }),
  MAX_ATTEMPTS: Type.Integer({
    minimum: 1,
    default: 3,
    description: 'Pushes before a deliverable goes offline',
  }),
  ACKED_TTL_MS: Type.Integer({
    minimum: 1000,
    default: 24 * 3600 * 1000,
    description:
      'How long acked mids are remembered for dedup (without Redis: the last 875,000 to 1,000,000 at most, and none across a restart: a repeat of an acked mid is then delivered again, apps dedup by mid)',
  }),
  GATEWAY_TTL_MS: Type.Integer({
    minimum: 1000,
    default: 30_000,
    description:
      'A gateway silent this long, while other heartbeats are read, is gone (while none are read, none is judged)',
  }),
  RETRY_TICK_MS: Type.Integer({
    minimum: 10,
    default: 200,
    description: 'How often due retries are looked for',
  }),
});
