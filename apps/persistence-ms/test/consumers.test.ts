import { DeliveredMessage, OfflineTopicEvent, TopicSpec, TOPICS } from '@parley/contracts';
import { Envelope, MemoryBus } from '@parley/kafka';
import { createPgliteDatabase, SqlDatabase } from '@parley/postgres';
import { createMetricsRegistry, TransientError } from '@parley/service-kit';
import { offlineHandler } from '../src/consumers';
import { createPersistenceMetrics } from '../src/metrics';
import { createSqlOfflineStore } from '../src/sql-store';

const NOW = 1_000_000;
const frame: DeliveredMessage = {
  type: 'message',
  mid: 'alice:r1',
  id: 'r1',
  from: 'alice',
  to: 'bob',
  chat: 'direct',
  body: 'hi',
  sentAt: 1,
};
const envelope = (event: OfflineTopicEvent) =>
  ({
    event,
    key: event.kind === 'offline' ? event.to : event.user,
    partition: 0,
    offset: '0',
    timestamp: 1,
  }) as Envelope<OfflineTopicEvent>;

/** A bus whose next publish to the delivery topic fails, as Kafka away would make it. */
class DeliveryFailsOnce extends MemoryBus {
  failNext = true;
  override async publish<T>(topic: TopicSpec<T>, events: T[], options?: { traceId?: string }) {
    if (this.failNext && topic.name === TOPICS.delivery.name) {
      this.failNext = false;
      throw new TransientError('broker away');
    }
    return super.publish(topic, events, options);
  }
}

describe('offline consumer: the connect race under redelivery', () => {
  let db: SqlDatabase;
  afterAll(() => db.close());

  it('hands a raced deliverable back on the retry of a batch whose first attempt stored it and then failed', async () => {
    db = await createPgliteDatabase();
    const store = createSqlOfflineStore(db, { now: () => NOW });
    await store.init();
    await store.markConnected([{ user: 'bob', at: NOW }]);
    const bus = new DeliveryFailsOnce();
    const handle = offlineHandler(
      store,
      createPersistenceMetrics(createMetricsRegistry('t', { collectDefaults: false })),
      { bus, windowMs: 30_000 },
    );
    const batch = [envelope({ v: 1, kind: 'offline', to: 'bob', frame, at: NOW + 5 })];
    await expect(handle(batch)).rejects.toThrow('broker away');
    await handle(batch); // the redelivery: stored already, so this attempt stores nothing new
    expect(bus.events(TOPICS.delivery)).toEqual([{ v: 1, kind: 'deliver', to: 'bob', frame, replay: true }]);

    await store.ack('bob', [frame.mid]);
    await handle(batch); // once acked, a late redelivery hands nothing back
    expect(bus.events(TOPICS.delivery)).toHaveLength(1);
  });
});
