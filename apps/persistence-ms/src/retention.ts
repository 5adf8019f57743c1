import type { Logger } from 'pino';
import { createPeriodicJob, type PeriodicJob } from '@parley/service-kit';
import type { PersistenceMetrics } from './metrics';
import type { OfflineStore, PurgeResult } from './store';

export interface RetentionOptions {
  store: OfflineStore;
  logger: Logger;
  metrics: PersistenceMetrics;
  /** Undelivered deliverables older than this are dropped. */
  retentionMs: number;
  /** Ack tombstones older than this are dropped. */
  tombstoneMs: number;
  intervalMs: number;
  now?: () => number;
}

/**
 * The periodic purge (see createPeriodicJob). With several replicas each purges, which is harmless
 * (deletes of the same old rows).
 */
export function createRetentionJob(options: RetentionOptions): PeriodicJob<PurgeResult> {
  const now = options.now ?? Date.now;
  return createPeriodicJob({
    name: 'retention purge',
    intervalMs: options.intervalMs,
    logger: options.logger,
    run: async (signal) => {
      const at = now();
      const result = await options.store.purge(
        { messagesBefore: at - options.retentionMs, tombstonesBefore: at - options.tombstoneMs },
        signal,
      );
      options.metrics.purged.inc({ kind: 'messages' }, result.messages);
      options.metrics.purged.inc({ kind: 'tombstones' }, result.tombstones);
      options.metrics.purged.inc({ kind: 'sequences' }, result.sequences);
      if (result.messages + result.tombstones + result.sequences > 0)
        options.logger.info(result, 'retention purge');
      return result;
    },
  });
}
