import {
  ConnectionTopicEvent,
  deliveredReceipts,
  DeliverEvent,
  OfflineAckEvent,
  OfflineDeliverableEvent,
  OfflineTopicEvent,
  TOPICS,
} from '@parley/contracts';
import type { Envelope, EventBus } from '@parley/kafka';
import type { PersistenceMetrics } from './metrics';
import { keyOf, type OfflineStore } from './store';

const REPLAY_PAGE = 500;

export interface OfflineHandlerDeps {
  store: OfflineStore;
  bus: EventBus;
  metrics: PersistenceMetrics;
  /**
   * A deliverable that went offline this soon after its user connected, by the events' own times
   * (so a consumer running behind does not shrink the window), is handed straight back to delivery.
   */
  connectRaceMs: number;
}

/**
 * Applies offline-topic events in their order: consecutive deliverables are stored in one
 * transaction, each ack is applied where it stands, so "stored then acked" and "acked then
 * stored" within one batch both end with nothing stored. An ack of stored deliverables sends
 * their senders `delivered` receipts before it deletes them (a retry sends them again rather than
 * never): what was stored for the user proves it was theirs to ack.
 *
 * The connect race: session-ms may send a deliverable offline just before it learns that its user
 * connected, and this service may hand the user's stored deliverables back (connectionHandler)
 * just before that deliverable is stored. Nothing would bring it over the socket until the next
 * connect. So what is stored for a user who connected within `connectRaceMs` goes back to delivery
 * too; session-ms drops a replay it cannot deliver (it is stored), so this cannot loop.
 */
export function offlineHandler({ store, bus, metrics, connectRaceMs }: OfflineHandlerDeps) {
  return async (batch: Envelope<OfflineTopicEvent>[]): Promise<void> => {
    let run: OfflineDeliverableEvent[] = [];
    let acks: OfflineAckEvent[] = [];
    const flush = async () => {
      if (run.length === 0) return;
      const items = run.map(({ to, frame }) => ({ to, frame }));
      const wentOfflineFrom = Math.min(...run.map((event) => event.at));
      run = [];
      const stored = await store.store(items);
      metrics.stored.inc(stored.length);
      metrics.skipped.inc(items.length - stored.length);
      const connected = await store.connectedSince(
        [...new Set(items.map((item) => item.to))],
        wentOfflineFrom - connectRaceMs,
      );
      // All that is stored, not only what this attempt stored: if an earlier attempt stored it and
      // failed before handing it back (Kafka away, a crash), this one is the hand-back.
      const raced = await store.held(
        items.filter((item) => connected.has(item.to)).map((item) => ({ ...item, mid: item.frame.mid })),
      );
      await bus.publish(
        TOPICS.delivery,
        raced.map(({ to, frame }): DeliverEvent => ({ v: 1, kind: 'deliver', to, frame, replay: true })),
      );
      metrics.replayed.inc(raced.length);
    };
    // Consecutive acks together: one read of what is held, one publish of the receipts, one
    // transaction (acks of one batch commute; stores around them are flushed first).
    const flushAcks = async () => {
      if (acks.length === 0) return;
      const events = acks;
      acks = [];
      const held = await store.held(
        events.flatMap((event) => event.mids.map((mid) => ({ to: event.user, mid }))),
      );
      const unsent = new Set(held.map(({ to, mid }) => keyOf(to, mid)));
      const receipts = events.flatMap((event) => {
        // A mid acked twice in the run gets one receipt, as one ack after the other would.
        const mids = [...new Set(event.mids)].filter((mid) => unsent.delete(keyOf(event.user, mid)));
        return deliveredReceipts(event.user, mids, event.at);
      });
      await bus.publish(TOPICS.delivery, receipts);
      metrics.acked.inc({ source: 'offline-topic' }, await store.ackAll(events));
    };
    for (const { event } of batch) {
      if (event.kind === 'offline') {
        await flushAcks();
        run.push(event);
        continue;
      }
      await flush();
      acks.push(event);
    }
    await flush();
    await flushAcks();
  };
}

/**
 * A device connected: hand its user's stored deliverables back to delivery, oldest first. The
 * connect is noted first, with its replay under way where something is stored; once the replay is
 * over (noted), what was stored behind the pages it read is read and handed back too.
 * offlineHandler hands back only what it stores for a user whose replay is over, so a deliverable
 * stored concurrently is either handed back here or by offlineHandler after this replay: never
 * ahead of older ones this replay sends.
 */
export function connectionHandler(
  store: OfflineStore,
  bus: EventBus,
  metrics: PersistenceMetrics,
  replayMax: number,
) {
  return async (batch: Envelope<ConnectionTopicEvent>[]): Promise<void> => {
    const connects = batch.flatMap(({ event }) =>
      event.kind === 'connection-up' ? [{ user: event.user, at: event.at }] : [],
    );
    // Most connecting users have nothing stored: they need no replay, nor the reads of one.
    for (const user of await store.markConnected(connects)) {
      let replay = await replayFrom(store, bus, user, 0, replayMax);
      let published = replay.published;
      // What was stored while the pages were read was left to this replay by offlineHandler: the
      // replay is noted over only once nothing is stored behind what it sent (else it reads on), so
      // a deliverable handed back by offlineHandler once it is over cannot overtake one it sends.
      // Past replayMax, what is stored waits for sync, as the rest of the backlog does.
      while (replay.complete && !(await store.replayed(user, replay.lastSeq))) {
        replay = await replayFrom(store, bus, user, replay.lastSeq, replayMax - published);
        published += replay.published;
      }
      if (!replay.complete) await store.replayed(user);
      metrics.replayed.inc(published);
    }
  };
}

/**
 * Publishes up to `max` of the user's stored deliverables after position `from`; returns how many,
 * the last position read, and whether that was all there was.
 */
async function replayFrom(
  store: OfflineStore,
  bus: EventBus,
  user: string,
  from: number,
  max: number,
): Promise<{ published: number; lastSeq: number; complete: boolean }> {
  let published = 0;
  let after = from;
  let complete = false;
  while (published < max) {
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
    if (!page.hasMore) {
      complete = true;
      break;
    }
  }
  return { published, lastSeq: after, complete };
}
