import {
  ConnectionTopicEvent,
  DeliverEvent,
  OfflineDeliverableEvent,
  OfflineTopicEvent,
  TOPICS,
} from '@parley/contracts';
import type { Envelope, EventBus } from '@parley/kafka';
import type { PersistenceMetrics } from './metrics';
import type { OfflineStore } from './store';

const REPLAY_PAGE = 500;

export interface ConnectRace {
  bus: EventBus;
  /** A deliverable stored this soon after its user connected is handed straight back to delivery. */
  windowMs: number;
  now?: () => number;
}

/**
 * Applies offline-topic events in their order: consecutive deliverables are stored in one
 * transaction, each ack is applied where it stands, so "stored then acked" and "acked then
 * stored" within one batch both end with nothing stored.
 *
 * The connect race: session-ms may send a deliverable offline just before it learns that its user
 * connected, and this service may hand the user's stored deliverables back (connectionHandler)
 * just before that deliverable is stored. Nothing would bring it over the socket until the next
 * connect. So what is stored for a user who connected within `windowMs` goes back to delivery
 * too; session-ms drops a replay it cannot deliver (it is stored), so this cannot loop.
 */
export function offlineHandler(store: OfflineStore, metrics: PersistenceMetrics, race: ConnectRace) {
  const now = race.now ?? Date.now;
  return async (batch: Envelope<OfflineTopicEvent>[]): Promise<void> => {
    let run: OfflineDeliverableEvent[] = [];
    const flush = async () => {
      if (run.length === 0) return;
      const stored = await store.store(run.map(({ to, frame }) => ({ to, frame })));
      metrics.stored.inc(stored.length);
      metrics.skipped.inc(run.length - stored.length);
      run = [];
      const connected = await store.connectedSince(
        [...new Set(stored.map((s) => s.to))],
        now() - race.windowMs,
      );
      const raced = stored.filter((s) => connected.has(s.to));
      await race.bus.publish(
        TOPICS.delivery,
        raced.map(({ to, frame }): DeliverEvent => ({ v: 1, kind: 'deliver', to, frame, replay: true })),
      );
      metrics.replayed.inc(raced.length);
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

/**
 * A device connected: hand its user's stored deliverables back to delivery, oldest first. The
 * connect is noted first, so a deliverable stored concurrently is either read here or sees the
 * note and is handed back by offlineHandler.
 */
export function connectionHandler(
  store: OfflineStore,
  bus: EventBus,
  metrics: PersistenceMetrics,
  replayMax: number,
  now = Date.now,
) {
  return async (batch: Envelope<ConnectionTopicEvent>[]): Promise<void> => {
    const users = new Set(batch.flatMap(({ event }) => (event.kind === 'connection-up' ? [event.user] : [])));
    await store.markConnected([...users], now());
    for (const user of users) {
      metrics.replayed.inc(await replayPending(store, bus, user, replayMax));
    }
  };
}

/** Publishes up to `max` of the user's stored deliverables on the delivery topic (`replay: true`). */
export async function replayPending(
  store: OfflineStore,
  bus: EventBus,
  user: string,
  max: number,
): Promise<number> {
  let published = 0;
  for (let after = 0; published < max;) {
    const page = await store.page(user, after, Math.min(REPLAY_PAGE, max - published));
    const events: DeliverEvent[] = page.messages.map((frame) => ({
      v: 1,
      kind: 'deliver',
      to: user,
      frame,
      replay: true,
    }));
    await bus.publish(TOPICS.delivery, events);
    published += events.length;
    after = page.lastSeq;
    if (!page.hasMore) break;
  }
  return published;
}
