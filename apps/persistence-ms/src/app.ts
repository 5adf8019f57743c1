import { Type } from '@sinclair/typebox';
import { TOPICS } from '@parley/contracts';
import { EventBus, KafkaSettingsSchema } from '@parley/kafka';
import { DatabaseConfig } from '@parley/postgres';
import {
  buildHttpServer,
  CommonConfig,
  DAY_MS,
  HttpServer,
  InternalConfig,
  Runtime,
  Service,
  serviceLifecycle,
} from '@parley/service-kit';
import { connectionHandler, offlineHandler } from './consumers';
import { createPersistenceMetrics } from './metrics';
import { createRetentionJob } from './retention';
import { registerSyncRoutes } from './routes';
import type { OfflineStore, PurgeResult } from './store';

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
  registerSyncRoutes(http, deps.store, deps.internalSecret);

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
