import type { Logger } from 'pino';
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

export interface RetentionJob {
  start(): void;
  stop(): Promise<void>;
  runOnce(): Promise<PurgeResult>;
}

/**
 * The periodic purge. Runs once at start and then every `intervalMs`, never overlapping itself;
 * with several replicas each purges, which is harmless (deletes of the same old rows).
 */
export function createRetentionJob(options: RetentionOptions): RetentionJob {
  const now = options.now ?? Date.now;
  let timer: NodeJS.Timeout | undefined;
  let running: Promise<unknown> = Promise.resolve();
  let stopped = true;

  const runOnce = async (): Promise<PurgeResult> => {
    const at = now();
    const result = await options.store.purge({
      messagesBefore: at - options.retentionMs,
      tombstonesBefore: at - options.tombstoneMs,
    });
    options.metrics.purged.inc({ kind: 'messages' }, result.messages);
    options.metrics.purged.inc({ kind: 'tombstones' }, result.tombstones);
    if (result.messages + result.tombstones > 0) options.logger.info(result, 'retention purge');
    return result;
  };
  const tick = () => {
    running = runOnce()
      .catch((err) => options.logger.warn({ err }, 'retention purge failed; retrying next interval'))
      .finally(() => {
        if (!stopped) timer = setTimeout(tick, options.intervalMs);
      });
  };
  return {
    start() {
      stopped = false;
      tick();
    },
    async stop() {
      stopped = true;
      clearTimeout(timer);
      await running;
    },
    runOnce,
  };
}
