import { connectKafkaBus } from '@parley/kafka';
import { connectDatabase } from '@parley/postgres';
import { DAY_MS, runMain } from '@parley/service-kit';
import { createGroupMs } from './app';
import { GroupMsConfig } from './config';
import { createSqlReportStore } from './reports';
import { createSqlGroupStore } from './sql-group-store';

void runMain('group-ms', GroupMsConfig, async (config, runtime) => {
  const db = await connectDatabase(config, runtime);
  const bus = await connectKafkaBus('group-ms', config, runtime);
  return createGroupMs({
    ...runtime,
    bus,
    store: createSqlGroupStore(db),
    reports: createSqlReportStore(db),
    maxReportsPerDay: config.MAX_REPORTS_PER_DAY,
    reportsRetentionMs: config.REPORTS_KEEP_DAYS * DAY_MS,
    port: config.PORT,
    host: config.HOST,
    internalSecret: config.INTERNAL_SECRET,
    maxMembers: config.GROUP_MAX_MEMBERS,
    maxGroupsPerUser: config.GROUP_MAX_GROUPS_PER_USER,
    opsRetentionMs: config.GROUP_OPS_KEEP_DAYS * DAY_MS,
    purgeIntervalMs: config.PURGE_INTERVAL_MS,
  });
});
