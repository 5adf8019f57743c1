import { connectKafkaBus } from '@parley/kafka';
import { connectDatabase } from '@parley/postgres';
import { runMain } from '@parley/service-kit';
import { createMessageRouter } from './app';
import { createSqlBlockReader } from './blocks';
import { MessageRouterConfig } from './config';

void runMain('message-router', MessageRouterConfig, async (config, runtime) => {
  const db = await connectDatabase(config, runtime);
  const bus = await connectKafkaBus('message-router', config, runtime);
  return createMessageRouter({
    ...runtime,
    bus,
    blocks: createSqlBlockReader(db, runtime.logger),
    port: config.PORT,
    host: config.HOST,
  });
});
