import { DeliveredMessage, OfflineTopicEvent, TopicSpec, TOPICS } from '@parley/contracts';
import { Envelope, MemoryBus } from '@parley/kafka';
import { createPgliteDatabase, SqlDatabase } from '@parley/postgres';
import { createMetricsRegistry, TransientError } from '@parley/service-kit';
import { connectionHandler, offlineHandler } from '../src/consumers';
import { createPersistenceMetrics } from '../src/metrics';
import { createSqlOfflineStore } from '../src/sql-store';
import type { OfflineStore } from '../src/store';

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

const fromAlice = (id: string): DeliveredMessage => ({ ...frame, mid: `alice:${id}`, id });

const opened: SqlDatabase[] = [];
afterAll(() => Promise.all(opened.map((db) => db.close())));
/** persistence-ms's SQL store on a fresh PGlite database, its clock at NOW. */
async function freshStore() {
  const db = await createPgliteDatabase();
  opened.push(db);
  const store = createSqlOfflineStore(db, { now: () => NOW });
  await store.init();
  return store;
}

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

const handlerOn = (store: OfflineStore, bus: MemoryBus) =>
  offlineHandler({
    store,
    bus,
    metrics: createPersistenceMetrics(createMetricsRegistry('t', { collectDefaults: false })),
    connectRaceMs: 30_000,
  });

/** bob's phone connects: the connections consumer replays what is stored for him. */
const bobConnects = (store: OfflineStore, bus: MemoryBus) =>
  connectionHandler(
    store,
    bus,
    createPersistenceMetrics(createMetricsRegistry('t', { collectDefaults: false })),
    1000,
  )([
    {
      event: {
        v: 1,
        kind: 'connection-up',
        user: 'bob',
        connId: 'c1',
        deviceId: 'phone',
        gateway: 'gw-1',
        gatewayUrl: 'http://gw-1:9100',
        at: NOW,
      },
      key: 'bob',
      partition: 0,
      offset: '0',
      timestamp: 1,
    },
  ]);

/** The mids handed to delivery, each where it first appears: session-ms pushes a mid when it first meets it. */
const firstSeenMids = (bus: MemoryBus) => [
  ...new Set(
    bus.events(TOPICS.delivery).map((e) => (e.kind === 'deliver' && 'mid' in e.frame ? e.frame.mid : '')),
  ),
];

describe('offline consumer: the connect race under redelivery', () => {
  it('hands a raced deliverable back on the retry of a batch whose first attempt stored it and then failed', async () => {
    const store = await freshStore();
    await store.markConnected([{ user: 'bob', at: NOW }]);
    await store.replayed('bob'); // the connect's replay is over (it found nothing stored)
    const bus = new DeliveryFailsOnce();
    const handle = handlerOn(store, bus);
    const batch = [envelope({ v: 1, kind: 'offline', to: 'bob', frame, at: NOW + 5 })];
    await expect(handle(batch)).rejects.toThrow('broker away');
    await handle(batch); // the redelivery: stored already, so this attempt stores nothing new
    expect(bus.events(TOPICS.delivery)).toEqual([{ v: 1, kind: 'deliver', to: 'bob', frame, replay: true }]);

    await store.ack('bob', [frame.mid]);
    await handle(batch); // once acked, a late redelivery hands nothing back
    expect(bus.events(TOPICS.delivery)).toHaveLength(1);
  });
});

describe('offline consumer: delivered receipts for what the user acks', () => {
  it('sends the sender a receipt for a stored deliverable the user acks, again on a retry, and none for a mid it never held', async () => {
    const store = await freshStore();
    const bus = new DeliveryFailsOnce();
    const handle = handlerOn(store, bus);
    const fromCarol: DeliveredMessage = { ...frame, mid: 'carol:c1', id: 'c1', from: 'carol' };
    await store.store([
      { to: 'bob', frame },
      { to: 'bob', frame: fromCarol },
      { to: 'dave', frame: { ...frame, mid: 'alice:d1', id: 'd1', to: 'dave' } },
    ]);
    const ack = (mids: string[]) => envelope({ v: 1, kind: 'offline-ack', user: 'bob', mids, at: NOW + 7 });
    // alice:d1 is dave's, alice:x1 nobody's: bob acking them proves nothing
    const batch = [ack(['alice:r1', 'carol:c1', 'alice:d1', 'alice:x1'])];
    await expect(handle(batch)).rejects.toThrow('broker away');
    await handle(batch);
    const receipts = bus.events(TOPICS.delivery).map((e) => e.kind === 'deliver' && [e.to, e.frame]);
    expect(receipts).toEqual([
      [
        'alice',
        expect.objectContaining({ type: 'receipt', status: 'delivered', mids: ['alice:r1'], by: 'bob' }),
      ],
      [
        'carol',
        expect.objectContaining({ type: 'receipt', status: 'delivered', mids: ['carol:c1'], by: 'bob' }),
      ],
    ]);
    expect((await store.page('bob', 0, 10)).messages).toEqual([]);
    expect((await store.page('dave', 0, 10)).messages).toHaveLength(1);

    await handle(batch); // a redelivery once the ack is applied: nothing is held, so no receipt again
    expect(bus.events(TOPICS.delivery)).toHaveLength(2);
  });

  it('applies consecutive acks together, one receipt per held mid, in their place among the stores', async () => {
    const store = await freshStore();
    const bus = new MemoryBus();
    const handle = handlerOn(store, bus);
    const ackAll = jest.spyOn(store, 'ackAll');
    await store.store([
      { to: 'bob', frame },
      { to: 'dave', frame: { ...frame, mid: 'alice:d1', id: 'd1', to: 'dave' } },
    ]);
    const ack = (user: string, mids: string[]) =>
      envelope({ v: 1, kind: 'offline-ack', user, mids, at: NOW + 7 });
    const offline = (to: string, id: string) =>
      envelope({ v: 1, kind: 'offline', to, frame: { ...fromAlice(id), to }, at: NOW + 5 });
    await handle([
      ack('bob', ['alice:r1']),
      ack('bob', ['alice:r1']),
      ack('dave', ['alice:d1', 'alice:late']),
      offline('bob', 'r2'),
      offline('dave', 'late'), // acked before it came: not stored
      ack('bob', ['alice:r2']),
    ]);
    expect(ackAll).toHaveBeenCalledTimes(2);
    const receipts = bus
      .events(TOPICS.delivery)
      .flatMap((e) =>
        e.kind === 'deliver' && e.frame.type === 'receipt' ? [[e.frame.by, e.frame.mids]] : [],
      );
    expect(receipts).toEqual([
      ['bob', ['alice:r1']],
      ['dave', ['alice:d1']],
      ['bob', ['alice:r2']],
    ]);
    expect((await store.page('bob', 0, 10)).messages).toEqual([]);
    expect((await store.page('dave', 0, 10)).messages).toEqual([]);
  });
});

describe('offline consumer and connect replay: the order a raced user gets stored deliverables in', () => {
  it('hands a deliverable stored during a connect replay back after the older stored ones, not ahead of them', async () => {
    const store = await freshStore();
    // m1 and m2 went offline while bob was away.
    await store.store(['m1', 'm2'].map((id) => ({ to: 'bob', frame: fromAlice(id) })));
    // bob connects; the connections consumer has noted the connect and is about to read his pages
    // when the offline consumer stores m3 (it went offline just as he connected).
    let reading!: () => void;
    const atPage = new Promise<void>((resolve) => (reading = resolve));
    let release!: () => void;
    const gate = new Promise<void>((resolve) => (release = resolve));
    const slowReader: OfflineStore = {
      ...store,
      page: async (...args) => {
        reading();
        await gate;
        return store.page(...args);
      },
    };
    const bus = new MemoryBus();
    const connected = bobConnects(slowReader, bus);
    await atPage;
    await handlerOn(
      store,
      bus,
    )([envelope({ v: 1, kind: 'offline', to: 'bob', frame: fromAlice('m3'), at: NOW + 5 })]);
    release();
    await connected;
    // session-ms pushes each mid when it first meets it (later copies are duplicates): bob's app
    // must meet them in the order they were sent.
    expect(firstSeenMids(bus)).toEqual(['alice:m1', 'alice:m2', 'alice:m3']);
  });
});

describe('connect of a user with nothing stored', () => {
  it('reads no replay for a user with nothing stored, and hands back what is stored for them right after', async () => {
    const store = await freshStore();
    const reads: string[] = [];
    const counting: OfflineStore = {
      ...store,
      page: (...args) => (reads.push('page'), store.page(...args)),
      replayed: (...args) => (reads.push('replayed'), store.replayed(...args)),
    };
    const bus = new MemoryBus();
    await bobConnects(counting, bus);
    expect(reads).toEqual([]); // most connects: one transaction, no replay
    await handlerOn(store, bus)([envelope({ v: 1, kind: 'offline', to: 'bob', frame, at: NOW + 5 })]);
    expect(firstSeenMids(bus)).toEqual([frame.mid]);
  });
});

describe('offline consumer and connect replay: a deliverable stored as the replay ends', () => {
  it('does not hand a deliverable stored after the replay is noted over ahead of one the replay left behind its pages', async () => {
    const store = await freshStore();
    await store.store(['m1', 'm2'].map((id) => ({ to: 'bob', frame: fromAlice(id) })));
    // The first page, once read, is held while the offline consumer stores m3 (left to the replay);
    // the read behind the pages, once the replay is noted over, is held while it stores m4.
    const gates: Array<{
      reached: Promise<void>;
      reach: () => void;
      open: Promise<void>;
      release: () => void;
    }> = [];
    for (let i = 0; i < 2; i++) {
      let reach!: () => void;
      let release!: () => void;
      const reached = new Promise<void>((resolve) => (reach = resolve));
      const open = new Promise<void>((resolve) => (release = resolve));
      gates.push({ reached, reach, open, release });
    }
    let pages = 0;
    const slowReader: OfflineStore = {
      ...store,
      page: async (...args) => {
        const gate = gates[pages++];
        // The first page is held once read, the read behind the pages before it reads.
        const read = gate === gates[0] ? await store.page(...args) : undefined;
        if (gate) {
          gate.reach();
          await gate.open;
        }
        return read ?? store.page(...args);
      },
    };
    const bus = new MemoryBus();
    const connected = bobConnects(slowReader, bus);
    const offline = handlerOn(store, bus);
    await gates[0].reached;
    await offline([envelope({ v: 1, kind: 'offline', to: 'bob', frame: fromAlice('m3'), at: NOW + 5 })]);
    gates[0].release();
    await gates[1].reached; // the replay is noted over; it is about to read what is behind its pages
    await offline([envelope({ v: 1, kind: 'offline', to: 'bob', frame: fromAlice('m4'), at: NOW + 6 })]);
    gates[1].release();
    await connected;
    expect(firstSeenMids(bus)).toEqual(['alice:m1', 'alice:m2', 'alice:m3', 'alice:m4']);
  });
});
