import { Type } from '@sinclair/typebox';
import { KafkaSettingsSchema } from '@parley/kafka';
import { INTERNAL_SECRET_HEADER } from '@parley/contracts';
import {
  CommonConfig,
  ConfigError,
  createLogger,
  DEV_INTERNAL_SECRET,
  loadConfig,
  logUnhandledRejections,
  stopOnSignals,
  tracedUsers,
} from '@parley/service-kit';
import { startFleet } from './fleet';

/** How long Ctrl-C's stop may take before the launcher exits 1 (a second Ctrl-C ends it at once). */
const STOP_DEADLINE_MS = 30_000;

const LauncherConfig = Type.Object({
  PARLEY_DATA_DIR: Type.String({ default: '.data', description: 'Broker log and PGlite data' }),
  KAFKA_BROKERS: Type.Optional(Type.String({ description: 'Use this Kafka instead of the embedded broker' })),
  KAFKA_PACK_EVENTS: KafkaSettingsSchema.KAFKA_PACK_EVENTS,
  KAFKA_CONSUMER_MIN_CYCLE_MS: KafkaSettingsSchema.KAFKA_CONSUMER_MIN_CYCLE_MS,
  REDIS_URL: Type.Optional(Type.String({ pattern: '^rediss?://' })),
  DATABASE_URL: Type.Optional(Type.String({ pattern: '^postgres(ql)?://' })),
  HOST: Type.String({ default: '127.0.0.1' }),
  LOG_LEVEL: { ...CommonConfig.LOG_LEVEL, default: 'warn' },
  TRACE_USERS: CommonConfig.TRACE_USERS,
});

/** `npm start`: the whole fleet in this process on embedded defaults; Ctrl-C stops it cleanly. */
async function main() {
  let config;
  try {
    config = loadConfig('parley', LauncherConfig);
  } catch (err) {
    if (err instanceof ConfigError) {
      process.stderr.write(`${err.message}\n`);
      process.exit(2);
    }
    throw err;
  }
  const logger = createLogger('launcher', { level: 'info' });
  logUnhandledRejections(logger);
  const fleet = await startFleet({
    dataDir: config.PARLEY_DATA_DIR,
    kafkaBrokers: config.KAFKA_BROKERS,
    packEvents: config.KAFKA_PACK_EVENTS,
    consumerMinCycleMs: config.KAFKA_CONSUMER_MIN_CYCLE_MS,
    redisUrl: config.REDIS_URL,
    databaseUrl: config.DATABASE_URL,
    host: config.HOST,
    logLevel: config.LOG_LEVEL,
    traceUsers: tracedUsers(config.TRACE_USERS),
  });
  const { urls } = fleet;
  process.stdout.write(
    [
      '',
      'Parley is running (embedded defaults: dev JWT secret, in-process session store, push log).',
      `  WebSocket      ${urls.ws}?token=<jwt>`,
      `  REST           ${urls.rest}/v1   (dev tokens: POST ${urls.rest}/v1/dev/token {"user":"alice"})`,
      `  Web client     ${urls.rest}/`,
      `  API docs       ${urls.docs}`,
      `  Kafka          ${urls.kafka}`,
      `  Reports        ${urls.reports}   (moderators: header ${INTERNAL_SECRET_HEADER}: ${DEV_INTERNAL_SECRET})`,
      `  Data           ${config.PARLEY_DATA_DIR}`,
      'Ctrl-C stops everything.',
      '',
    ].join('\n'),
  );
  stopOnSignals(() => fleet.stop(), { logger, deadlineMs: STOP_DEADLINE_MS });
}

main().catch((err) => {
  process.stderr.write(`parley failed to start: ${startFailure(err)}\n`);
  process.exit(1);
});

/** What to tell someone whose `npm start` failed: the usual causes in plain words, the stack otherwise. */
function startFailure(err: unknown): string {
  const { code, address, port, message } = err as NodeJS.ErrnoException & { address?: string; port?: number };
  if (code === 'EADDRINUSE')
    return `port ${port} on ${address} is taken: another npm start, or another program, is using it; stop it first`;
  if (typeof message === 'string' && /data directory .* is in use by process/.test(message))
    return `${message}: another npm start is running on it; stop it, or give this one PARLEY_DATA_DIR=<another directory>`;
  return err instanceof Error ? (err.stack ?? err.message) : String(err);
}
