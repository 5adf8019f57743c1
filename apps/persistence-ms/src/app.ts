import { TOPICS } from '@parley/contracts';
import { EventBus } from '@parley/kafka';
import { buildHttpServer, DAY_MS, HttpServer, Runtime, Service, serviceLifecycle } from '@parley/service-kit';
import { connectionHandler, offlineHandler } from './consumers';
import { createPersistenceMetrics } from './metrics';
import { createRetentionJob } from './retention';
import { registerSyncRoutes } from './routes';
import type { OfflineStore, PurgeResult } from './store';

export interface PersistenceDeps extends Omit<Runtime, 'closer'> {
  bus: EventBus;
  store: OfflineStore;
  port: number;
  host?: string;
  internalSecret: string;
  retentionMs?: number;
  tombstoneMs?: number;
  purgeIntervalMs?: number;
  replayMax?: number;
  connectRaceMs?: number;
  /** How long one call of an erasure deletes before it answers 503 (call again); default 5 s. */
  eraseBudgetMs?: number;
  /** Consumer group of the offline topic; the connections topic uses `<groupId>.connections`. */
  groupId?: string;
  now?: () => number;
}

export interface PersistenceService extends Service {
  http: HttpServer;
  /** Runs the retention purge now (it also runs periodically). */
  purgeNow(): Promise<PurgeResult>;
}

/**
 * Keeps what could not be delivered until the user acks it: stores offline deliverables, drops
 * them on ack, serves the sync query, and hands them back to delivery when a device connects.
 */
export function createPersistenceService(deps: PersistenceDeps): PersistenceService {
  const http = buildHttpServer(deps);
  const metrics = createPersistenceMetrics(deps.metrics);
  registerSyncRoutes(http, deps.store, {
    internalSecret: deps.internalSecret,
    eraseBudgetMs: deps.eraseBudgetMs ?? 5000,
  });

  const groupId = deps.groupId ?? 'persistence-ms';
  const offline = deps.bus.subscribe({
    groupId,
    topic: TOPICS.offline,
    handle: offlineHandler({
      store: deps.store,
      bus: deps.bus,
      metrics,
      connectRaceMs: deps.connectRaceMs ?? 30_000,
    }),
  });
  const connections = deps.bus.subscribe({
    groupId: `${groupId}.connections`,
    topic: TOPICS.connections,
    handle: connectionHandler(deps.store, deps.bus, metrics, deps.replayMax ?? 1000),
  });
  const retention = createRetentionJob({
    store: deps.store,
    logger: deps.logger,
    metrics,
    retentionMs: deps.retentionMs ?? 30 * DAY_MS,
    tombstoneMs: deps.tombstoneMs ?? 8 * DAY_MS,
    intervalMs: deps.purgeIntervalMs ?? 3_600_000,
    now: deps.now,
  });

  return {
    http,
    purgeNow: () => retention.runOnce(),
    ...serviceLifecycle(http, deps, deps.readiness, [
      { start: () => deps.store.init() },
      offline,
      connections,
      retention,
    ]),
  };
}
