import {
  DeliveredMessage,
  INTERNAL_SECRET_HEADER,
  INTERNAL_USER_HEADER,
  OfflineTopicEvent,
  TOPICS,
} from '@parley/contracts';
import { MemoryBus } from '@parley/kafka';
import { createPgliteDatabase, SqlDatabase } from '@parley/postgres';
import { createMetricsRegistry, Readiness, silentLogger } from '@parley/service-kit';
import { DAY_MS } from '@parley/service-kit';
import { createPersistenceService, PersistenceService } from '../src/app';
import { createSqlOfflineStore } from '../src/sql-store';
import { waitFor } from '@parley/test-kit';

const SECRET = 'test-internal-secret';

const message = (id: string, to = 'bob'): DeliveredMessage => ({
  type: 'message',
  mid: `alice:${id}`,
  id,
  from: 'alice',
  to,
  chat: 'direct',
  body: { text: id },
  sentAt: 1,
});
const offline = (frame: DeliveredMessage, at = 1): OfflineTopicEvent => ({
  v: 1,
  kind: 'offline',
  to: frame.to,
  frame,
  at,
});
const connectionUp = (user: string) => ({
  v: 1 as const,
  kind: 'connection-up' as const,
  user,
  connId: 'c1',
  deviceId: 'phone',
  gateway: 'gw-1',
  gatewayUrl: 'http://gw-1:9100',
  at: 2,
});

describe('persistence-ms service', () => {
  let db: SqlDatabase;
  let bus: MemoryBus;
  let service: PersistenceService;
  let clock = 100 * DAY_MS;

  const get = (url: string, user = 'bob', secret = SECRET) =>
    service.http.inject({
      method: 'GET',
      url,
      headers: { [INTERNAL_SECRET_HEADER]: secret, [INTERNAL_USER_HEADER]: user },
    });
  const pendingMids = async (user = 'bob') =>
    (await get('/internal/messages', user)).json().messages.map((m: { mid: string }) => m.mid);

  beforeAll(async () => {
    db = await createPgliteDatabase();
    bus = new MemoryBus();
    const readiness = new Readiness();
    readiness.register('database', () => db.ping());
    service = createPersistenceService({
      bus,
      store: createSqlOfflineStore(db, { now: () => clock }),
      logger: silentLogger(),
      metrics: createMetricsRegistry('persistence-ms', { collectDefaults: false }),
      readiness,
      port: 0,
      host: '127.0.0.1',
      internalSecret: SECRET,
      retentionMs: 30 * DAY_MS,
      now: () => clock,
    });
    await service.start();
  });
  afterAll(async () => {
    await service.stop();
    await db.close();
  });

  it('stores offline deliverables and serves them oldest first with a cursor', async () => {
    await bus.publish(
      TOPICS.offline,
      ['m1', 'm2', 'm3'].map((id) => offline(message(id))),
    );
    await waitFor(async () => (await pendingMids()).length === 3);
    const first = await get('/internal/messages?limit=2');
    expect(first.statusCode).toBe(200);
    expect(first.json().messages).toEqual([message('m1'), message('m2')]);
    const next = first.json().next;
    expect(typeof next).toBe('string');
    const second = await get(`/internal/messages?limit=2&after=${encodeURIComponent(next)}`);
    expect(second.json()).toEqual({ messages: [message('m3')], next: null });
    expect(await pendingMids('carol')).toEqual([]); // another user sees nothing of bob's
    // carol's app kept bob's cursor across an account switch: refused, not read as a place in hers.
    const carols = await get(`/internal/messages?after=${encodeURIComponent(next)}`, 'carol');
    expect([carols.statusCode, carols.json().error]).toEqual([
      400,
      {
        code: 'invalid_request',
        message: "query after: a cursor from another user's list; page again from the start (without after)",
      },
    ]);
  });

  it('drops deliverables on an offline-ack, also one that came before the deliverable', async () => {
    await bus.publish(TOPICS.offline, [
      { v: 1, kind: 'offline-ack', user: 'bob', mids: ['alice:m1', 'alice:late'], at: 3 },
      offline(message('late')),
      offline(message('m4')),
    ]);
    await waitFor(async () => (await pendingMids()).includes('alice:m4'));
    expect(await pendingMids()).toEqual(['alice:m2', 'alice:m3', 'alice:m4']);
    // alice hears that m1 was delivered; of `late` nothing here: it was acked before it could be stored
    expect(bus.events(TOPICS.delivery)).toEqual([
      {
        v: 1,
        kind: 'deliver',
        to: 'alice',
        frame: expect.objectContaining({
          type: 'receipt',
          status: 'delivered',
          mids: ['alice:m1'],
          by: 'bob',
          at: 3,
        }),
      },
    ]);
  });

  it('drops on an offline-ack only what the acking user holds, and offers no ack route of its own', async () => {
    const before = bus.events(TOPICS.delivery).length;
    // One partition in the memory bus: once bob's ack is handled, carol's before it was too.
    await bus.publish(TOPICS.offline, [
      { v: 1, kind: 'offline-ack', user: 'carol', mids: ['alice:m3'], at: 4 },
      { v: 1, kind: 'offline-ack', user: 'bob', mids: ['alice:m2'], at: 4 },
    ]);
    await waitFor(async () => !(await pendingMids()).includes('alice:m2'));
    expect(await pendingMids()).toEqual(['alice:m3', 'alice:m4']);
    expect(bus.events(TOPICS.delivery).slice(before)).toEqual([
      expect.objectContaining({
        to: 'alice',
        frame: expect.objectContaining({ mids: ['alice:m2'], by: 'bob' }),
      }),
    ]);
    // An ack that skipped session-ms and the offline topic would drop the copy without a receipt.
    const route = await service.http.inject({
      method: 'POST',
      url: '/internal/ack',
      headers: { [INTERNAL_SECRET_HEADER]: SECRET, [INTERNAL_USER_HEADER]: 'bob' },
      payload: { mids: ['alice:m3'] },
    });
    expect(route.statusCode).toBe(404);
  });

  it('hands stored deliverables back to delivery when a device connects', async () => {
    await bus.publish(TOPICS.connections, [
      connectionUp('bob'),
      { ...connectionUp('dora'), kind: 'connection-down' },
    ]);
    const replays = () => bus.events(TOPICS.delivery).filter((e) => e.kind === 'deliver' && e.replay);
    await waitFor(() => replays().length === 2);
    expect(replays()).toEqual([
      { v: 1, kind: 'deliver', to: 'bob', frame: message('m3'), replay: true },
      { v: 1, kind: 'deliver', to: 'bob', frame: message('m4'), replay: true },
    ]);
  });

  it('hands a deliverable stored just after its user connected straight back to delivery (the connect race)', async () => {
    const before = bus.events(TOPICS.delivery).length;
    await bus.publish(TOPICS.offline, [offline(message('raced')), offline(message('away', 'dora'))]);
    await waitFor(async () => (await pendingMids('dora')).includes('alice:away'));
    await waitFor(() => bus.events(TOPICS.delivery).length === before + 1);
    // bob connected just now; dora did not: hers waits for her next connect or sync
    expect(bus.events(TOPICS.delivery).slice(before)).toEqual([
      { v: 1, kind: 'deliver', to: 'bob', frame: message('raced'), replay: true },
    ]);
    expect(await pendingMids()).toContain('alice:raced'); // stored until acked all the same

    // Gone offline past CONNECT_RACE_MS (30 s by default) after bob's connect, by the events' times:
    // however late this service reads it, it is not a race.
    await bus.publish(TOPICS.offline, [offline(message('later'), connectionUp('bob').at + 31_000)]);
    await waitFor(async () => (await pendingMids()).includes('alice:later'));
    expect(bus.events(TOPICS.delivery)).toHaveLength(before + 1);
  });

  it('refuses internal calls without the secret (403) and names the bad field (400)', async () => {
    const forbidden = await get('/internal/messages', 'bob', 'wrong-secret-value');
    expect(forbidden.statusCode).toBe(403);
    expect(forbidden.json().error.code).toBe('forbidden');
    const noSecret = await service.http.inject({ method: 'GET', url: '/internal/messages' });
    expect(noSecret.statusCode).toBe(403);

    const badLimit = await get('/internal/messages?limit=501');
    expect(badLimit.statusCode).toBe(400);
    expect(badLimit.json()).toEqual({
      error: { code: 'invalid_request', message: 'query limit: must be <= 500' },
    });
    expect((await get('/internal/messages?limit=abc')).json().error.message).toBe(
      'query limit: must be integer',
    );
    expect((await get('/internal/messages?after=bogus')).json()).toEqual({
      error: { code: 'invalid_request', message: 'query after: is not a cursor returned by this API' },
    });
    expect((await get('/internal/messages', 'not a user')).json().error.message).toMatch(
      /^x-parley-user: must match/,
    );
  });

  it('purges past retention and counts what it stored, acked and purged', async () => {
    clock += 31 * DAY_MS;
    const purged = await service.purgeNow();
    expect(purged.messages).toBe(5); // m3, m4 and the connect-race test's three
    expect(await pendingMids()).toEqual([]);
    const metrics = (await service.http.inject('/metrics')).body;
    expect(metrics).toContain('parley_persistence_stored_total{service="persistence-ms"} 7');
    expect(metrics).toContain('parley_persistence_skipped_total{service="persistence-ms"} 1');
    expect(metrics).toContain(
      'parley_persistence_acked_total{source="offline-topic",service="persistence-ms"} 2',
    );
    expect(metrics).toContain('parley_persistence_purged_total{kind="messages",service="persistence-ms"} 5');
    expect(metrics).toContain('parley_persistence_replayed_total{service="persistence-ms"} 3');
    expect((await service.http.inject('/readyz')).statusCode).toBe(200);
  });

  it('erases what is stored for a user whose account is erased', async () => {
    await bus.publish(TOPICS.offline, [offline(message('e1', 'ella'))]);
    await waitFor(async () => (await pendingMids('ella')).length === 1);
    const erase = () =>
      service.http.inject({
        method: 'DELETE',
        url: '/internal/account',
        headers: { [INTERNAL_SECRET_HEADER]: SECRET, [INTERNAL_USER_HEADER]: 'ella' },
      });
    expect((await erase()).json()).toEqual({ erased: 1 });
    expect(await pendingMids('ella')).toEqual([]);
    expect((await erase()).json()).toEqual({ erased: 0 });
  });

  it('answers an erasure that ran out of time 503, what it erased so far erased; called again, it goes on', async () => {
    await bus.publish(TOPICS.offline, [offline(message('f1', 'fay')), offline(message('f2', 'fay'))]);
    await waitFor(async () => (await pendingMids('fay')).length === 2);
    // A deliverable a statement, and no time: each call erases one batch.
    const hurried = createPersistenceService({
      bus: new MemoryBus(),
      store: createSqlOfflineStore(db, { now: () => clock, purgeBatch: 1 }),
      logger: silentLogger(),
      metrics: createMetricsRegistry('persistence-ms', { collectDefaults: false }),
      readiness: new Readiness(),
      port: 0,
      internalSecret: SECRET,
      eraseBudgetMs: 0,
    });
    const erase = () =>
      hurried.http.inject({
        method: 'DELETE',
        url: '/internal/account',
        headers: { [INTERNAL_SECRET_HEADER]: SECRET, [INTERNAL_USER_HEADER]: 'fay' },
      });
    const first = await erase();
    expect([first.statusCode, first.json().error]).toEqual([
      503,
      { code: 'unavailable', message: 'erased 1 stored deliverables, more to erase: call again to go on' },
    ]);
    expect(await pendingMids('fay')).toHaveLength(1);
    expect((await erase()).statusCode).toBe(503); // the second, a full batch: there may be more
    const last = await erase();
    expect([last.statusCode, last.json()]).toEqual([200, { erased: 0 }]);
    expect(await pendingMids('fay')).toEqual([]);
  });
});
