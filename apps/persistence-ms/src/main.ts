import { connectKafkaBus } from '@parley/kafka';
import { connectDatabase } from '@parley/postgres';
import { DAY_MS, runMain } from '@parley/service-kit';
import { createPersistenceService } from './app';
import { PersistenceConfig } from './config';
import { createSqlOfflineStore } from './sql-store';

void runMain('persistence-ms', PersistenceConfig, async (config, runtime) => {
  const db = await connectDatabase(config, runtime);
  const bus = await connectKafkaBus('persistence-ms', config, runtime);
  return createPersistenceService({
    ...runtime,
    bus,
    store: createSqlOfflineStore(db),
    port: config.PORT,
    host: config.HOST,
    internalSecret: config.INTERNAL_SECRET,
    retentionMs: config.RETENTION_DAYS * DAY_MS,
    tombstoneMs: config.ACK_TOMBSTONE_DAYS * DAY_MS,
    purgeIntervalMs: config.PURGE_INTERVAL_MS,
    replayMax: config.REPLAY_MAX,
    connectRaceMs: config.CONNECT_RACE_MS,
  });
});
