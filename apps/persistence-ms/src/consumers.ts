import { ConnectionTopicEvent, DeliverEvent, OfflineDeliverableEvent, OfflineTopicEvent, TOPICS } from '@parley/contracts';
import type { Envelope, EventBus } from '@parley/kafka';
import type { PersistenceMetrics } from './metrics';
import type { OfflineStore } from './store';

const REPLAY_PAGE = 500;

/**
 * Applies offline-topic events in their order: consecutive deliverables are stored in one
 * transaction, each ack is applied where it stands, so "stored then acked" and "acked then
 * stored" within one batch both end with nothing stored.
 */
export function offlineHandler(store: OfflineStore, metrics: PersistenceMetrics) {
  return async (batch: Envelope<OfflineTopicEvent>[]): Promise<void> => {
    let run: OfflineDeliverableEvent[] = [];
    const flush = async () => {
      if (run.length === 0) return;
      const stored = await store.store(run.map(({ to, frame }) => ({ to, frame })));
      metrics.stored.inc(stored);
      metrics.skipped.inc(run.length - stored);
      run = [];
    };
    for (const { event } of batch) {
      if (event.kind === 'offline') {
        run.push(event);
        continue;
      }
      await flush();
      metrics.acked.inc({ source: 'offline-topic' }, await store.ack(event.user, event.mids));
    }
    await flush();
  };
}

/** A device connected: hand its user's stored deliverables back to delivery, oldest first. */
export function connectionHandler(store: OfflineStore, bus: EventBus, metrics: PersistenceMetrics, replayMax: number) {
  return async (batch: Envelope<ConnectionTopicEvent>[]): Promise<void> => {
    const users = new Set(batch.flatMap(({ event }) => (event.kind === 'connection-up' ? [event.user] : [])));
    for (const user of users) {
      metrics.replayed.inc(await replayPending(store, bus, user, replayMax));
    }
  };
}

/** Publishes up to `max` of the user's stored deliverables on the delivery topic (`replay: true`). */
export async function replayPending(store: OfflineStore, bus: EventBus, user: string, max: number): Promise<number> {
  let published = 0;
  for (let after = 0; published < max; ) {
    const page = await store.page(user, after, Math.min(REPLAY_PAGE, max - published));
    const events: DeliverEvent[] = page.messages.map((frame) => ({ v: 1, kind: 'deliver', to: user, frame, replay: true }));
    await bus.publish(TOPICS.delivery, events);
    published += events.length;
    after = page.lastSeq;
    if (!page.hasMore) break;
  }
  return published;
}
