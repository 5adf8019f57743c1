import { connectKafkaBus } from '@parley/kafka';
import { openDatabase } from '@parley/postgres';
import { runMain } from '@parley/service-kit';
import { createMessageRouter } from './app';
import { createSqlBlockReader } from './blocks';
import { MessageRouterConfig } from './config';

void runMain('message-router', MessageRouterConfig, async (config, runtime) => {
  // Not connectDatabase: no readiness check on it. Routing goes on without the block checks while
  // the database is away (fail open), so the router stays ready.
  const db = await openDatabase(config);
  runtime.closer.add('database', () => db.close());
  const bus = await connectKafkaBus('message-router', config, runtime);
  return createMessageRouter({
    ...runtime,
    bus,
    blocks: createSqlBlockReader(db, runtime.logger),
    port: config.PORT,
    host: config.HOST,
  });
});
