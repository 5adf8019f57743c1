import { randomUUID } from 'node:crypto';
import { Counter } from 'prom-client';
import {
  deliverToMany,
  GROUP_LIST_MAX_LIMIT,
  GroupCommandEvent,
  MAX_BLOCKS_PER_USER,
  MAX_REPORTS_PER_DAY,
  TopicPosition,
  TOPICS,
  userMid,
} from '@parley/contracts';
import { Envelope, EventBus } from '@parley/kafka';
import {
  buildHttpServer,
  createPeriodicJob,
  DAY_MS,
  HttpServer,
  requireInternalSecret,
  Runtime,
  Service,
  serviceLifecycle,
} from '@parley/service-kit';
import { DEFAULT_GROUP_OPS_KEEP_DAYS, DEFAULT_REPORTS_KEEP_DAYS } from './ops-retention';
import { GroupStore } from './group-store';
import { addEffects, GroupEffects, GroupService, noEffects } from './group-service';
import { registerGroupRoutes } from './http-routes';
import { registerReportRoutes, ReportStore } from './reports';

export interface GroupMsDeps extends Omit<Runtime, 'closer'> {
  bus: EventBus;
  store: GroupStore;
  port: number;
  host?: string;
  internalSecret: string;
  maxMembers: number;
  /** Most groups one user may be in. */
  maxGroupsPerUser: number;
  /** Consumer group for group commands; `group-ms` by default. */
  groupId?: string;
  clock?: () => number;
  newId?: () => string;
  /** How long applied ops are remembered (default 8 days). */
  opsRetentionMs?: number;
  /** How often old ops are purged (default hourly). */
  purgeIntervalMs?: number;
  /** How often the outbox looks for notices a failed publish left behind (default 5 s). */
  outboxIntervalMs?: number;
  /** How old an op must be before the outbox takes over its notice (default 5 s). */
  outboxGraceMs?: number;
  /** Groups listed at a time while an erased user leaves them all (default 100). */
  erasePageSize?: number;
  /**
   * How long one erasure call leaves groups before it answers 503 `unavailable`, to be called again
   * (default 5 s: half the rest-gateway's upstream timeout). At least one group a call.
   */
  eraseBudgetMs?: number;
  /** Users one user may block (default MAX_BLOCKS_PER_USER, which `GET /v1/blocks` answers at once). */
  maxBlocksPerUser?: number;
  /** Where reports of users are kept for moderators. */
  reports: ReportStore;
  /** Reports one user may file in 24 hours (default MAX_REPORTS_PER_DAY). */
  maxReportsPerDay?: number;
  /** How long a report is kept (default 90 days). */
  reportsRetentionMs?: number;
}

export interface GroupMs extends Service {
  http: HttpServer;
  /**
   * Purges the ops past retention, the groups emptied and the block changes recorded before it,
   * and the reports past theirs, now (it also runs periodically); returns how many of each went.
   */
  purgeNow(): Promise<{ ops: number; groups: number; blockChanges: number; routed: number; reports: number }>;
  /** Publishes the notices a failed publish left behind now (it also runs periodically). */
  publishOutboxNow(): Promise<number>;
}

/**
 * Groups and members in Postgres: the internal REST API for synchronous calls, and the consumer of
 * group commands from the pipe. Every change publishes a `group` deliverable to each member (and to
 * removed members) and a change event for membership caches.
 */
export function createGroupMs(deps: GroupMsDeps): GroupMs {
  const clock = deps.clock ?? Date.now;
  const rules = { maxMembers: deps.maxMembers, maxGroupsPerUser: deps.maxGroupsPerUser };
  const groups = new GroupService(deps.store, rules, clock);
  const applied = new Counter({
    name: 'parley_group_commands_total',
    help: 'Group commands from the pipe, by op',
    labelNames: ['op'],
    registers: [deps.metrics],
  });
  const publish = (effects: GroupEffects) => publishEffects(deps.bus, effects);

  /**
   * Applies group ops from the pipe in order; idempotent by each op's mid. `positions` (one per
   * command, from a router of this release) are the ops' places in the group topic.
   */
  const applyCommands = async (commands: GroupCommandEvent[], positions?: TopicPosition[]) => {
    const placed = positions?.length === commands.length ? positions : undefined;
    if (positions && !placed)
      deps.logger.warn(
        { commands: commands.length, positions: positions.length },
        'group op positions ignored: not one per op',
      );
    const effects = noEffects();
    for (const [i, command] of commands.entries()) {
      addEffects(effects, await groups.applyCommand(command, placed?.[i]));
      applied.inc({ op: command.frame.op });
    }
    await publish(effects);
    await groups.published(commands.map((command) => userMid(command.from, command.frame.id)));
  };

  const http = buildHttpServer(deps);
  requireInternalSecret(http, deps.internalSecret);
  registerGroupRoutes(http, {
    groups,
    publish,
    applyCommands,
    clock,
    newId: deps.newId ?? randomUUID,
    logger: deps.logger,
    erasePageSize: deps.erasePageSize ?? 100,
    eraseBudgetMs: deps.eraseBudgetMs ?? 5000,
    // As many as the largest page can hold: an answer without paging is no larger than one with it.
    maxListedMembers: GROUP_LIST_MAX_LIMIT * deps.maxMembers,
    blocks: deps.store,
    routed: deps.store,
    maxBlocksPerUser: deps.maxBlocksPerUser ?? MAX_BLOCKS_PER_USER,
    reports: deps.reports,
  });
  registerReportRoutes(http, {
    reports: deps.reports,
    clock,
    newId: deps.newId ?? randomUUID,
    logger: deps.logger,
    metrics: deps.metrics,
    maxReportsPerDay: deps.maxReportsPerDay ?? MAX_REPORTS_PER_DAY,
  });

  // Routers apply ops through the internal API; this drains what a router of an earlier release
  // forwarded to the group-commands topic instead.
  const subscription = deps.bus.subscribe({
    groupId: deps.groupId ?? 'group-ms',
    topic: TOPICS.groupCommands,
    handle: (batch: Envelope<GroupCommandEvent>[]) => applyCommands(batch.map(({ event }) => event)),
  });

  const purged = new Counter({
    name: 'parley_group_ops_purged_total',
    help: 'Applied group ops forgotten past their retention',
    registers: [deps.metrics],
  });
  const emptiedPurged = new Counter({
    name: 'parley_group_empty_groups_purged_total',
    help: 'Groups left without members forgotten after the ops retention',
    registers: [deps.metrics],
  });
  const purge = createPeriodicJob({
    name: 'group ops purge',
    intervalMs: deps.purgeIntervalMs ?? 3_600_000,
    logger: deps.logger,
    run: async (signal) => {
      const before = clock() - (deps.opsRetentionMs ?? DEFAULT_GROUP_OPS_KEEP_DAYS * DAY_MS);
      const ops = await deps.store.forgetOpsBefore(before, signal);
      purged.inc(ops);
      const groups = await deps.store.forgetEmptyGroupsBefore(before, signal);
      emptiedPurged.inc(groups);
      const blockChanges = await deps.store.forgetBlockChangesBefore(before, signal);
      const routed = await deps.store.forgetRoutedBefore(before, signal);
      const reports = await deps.reports.forgetReportsBefore(
        clock() - (deps.reportsRetentionMs ?? DEFAULT_REPORTS_KEEP_DAYS * DAY_MS),
        signal,
      );
      if (ops + groups + blockChanges + routed + reports > 0)
        deps.logger.info(
          { ops, groups, blockChanges, routed, reports },
          'purged old group ops, emptied groups, block changes, routed group messages and reports',
        );
      return { ops, groups, blockChanges, routed, reports };
    },
  });

  const outbox = createPeriodicJob({
    name: 'group notice outbox',
    intervalMs: deps.outboxIntervalMs ?? 5000,
    logger: deps.logger,
    run: async () => {
      const { opMids, effects } = await groups.unpublished(clock() - (deps.outboxGraceMs ?? 5000), 500);
      if (opMids.length === 0) return 0;
      await publish(effects);
      await groups.published(opMids);
      deps.logger.warn({ count: opMids.length }, 'published group notices that a failed publish left behind');
      return opMids.length;
    },
  });

  return {
    http,
    purgeNow: () => purge.runOnce(),
    publishOutboxNow: () => outbox.runOnce(),
    ...serviceLifecycle(http, deps, deps.readiness, [
      { start: () => deps.store.init() },
      subscription,
      purge,
      outbox,
    ]),
  };
}

/** A notice goes out as one `deliver-many` per delivery partition, as group messages do. */
async function publishEffects(bus: EventBus, effects: GroupEffects): Promise<void> {
  const partitionOf = effects.notices.length > 0 ? await bus.partitioner(TOPICS.delivery) : undefined;
  const notices = effects.notices.flatMap((n) => deliverToMany(n.recipients, n.frame, partitionOf));
  await Promise.all([
    bus.publish(TOPICS.delivery, [...effects.deliveries, ...notices]),
    bus.publish(TOPICS.groupChanges, effects.changes),
  ]);
}
