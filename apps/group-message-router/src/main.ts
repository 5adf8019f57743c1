import { connectKafkaBus } from '@parley/kafka';
import { connectDatabase } from '@parley/postgres';
import { runMain } from '@parley/service-kit';
import { createGroupMessageRouter } from './app';
import { GroupMessageRouterConfig } from './config';
import { createHttpGroupCommandApplier } from './group-commands';
import { createSqlRoutedLog } from './routed-log';
import { createSqlMembershipReader } from './sql-membership';

void runMain('group-message-router', GroupMessageRouterConfig, async (config, runtime) => {
  const db = await connectDatabase(config, runtime);
  const bus = await connectKafkaBus('group-message-router', config, runtime);
  return createGroupMessageRouter({
    ...runtime,
    bus,
    membership: createSqlMembershipReader(db),
    routed: createSqlRoutedLog(db, runtime.logger),
    groupCommands: createHttpGroupCommandApplier(config.GROUP_URL, config.INTERNAL_SECRET),
    port: config.PORT,
    host: config.HOST,
    cacheTtlMs: config.MEMBERSHIP_CACHE_TTL_MS,
    cacheMaxGroups: config.MEMBERSHIP_CACHE_MAX_GROUPS,
    cacheMaxMembers: config.MEMBERSHIP_CACHE_MAX_MEMBERS,
    deliveryBatchSize: config.DELIVERY_BATCH_SIZE,
  });
});
