import { setTimeout as sleep } from 'node:timers/promises';
import {
  DeliveredMessage,
  INTERNAL_SECRET_HEADER,
  INTERNAL_USER_HEADER,
  OfflineTopicEvent,
  TOPICS,
} from '@parley/contracts';
import { MemoryBus } from '@parley/kafka';
import { createPgliteDatabase, SqlDatabase } from '@parley/postgres';
import { createMetricsRegistry, Readiness, silentLogger, TransientError } from '@parley/service-kit';
import { createPushService, PushDeps, PushService } from '../src/app';
import { createSqlDeviceStore, DeviceStore } from '../src/device-store';
import { createSqlMuteStore, MuteStore } from '../src/mute-store';
import { createFcmProvider } from '../src/fcm-provider';
import { FAKE_PROJECT, FakeFcm, FCM_ERRORS, fakeCredential } from './fake-fcm';
import { waitFor } from '@parley/test-kit';

const SECRET = 'test-internal-secret';
const WINDOW_MS = 150;

let seq = 0;
const message = (to: string, text = 'top secret', from = 'alice'): DeliveredMessage => {
  const id = `m${++seq}`;
  return { type: 'message', mid: `${from}:${id}`, id, from, to, chat: 'direct', body: { text }, sentAt: 1 };
};
const offline = (frame: DeliveredMessage, at = Date.now()): OfflineTopicEvent => ({
  v: 1,
  kind: 'offline',
  to: frame.to,
  frame,
  at,
});

describe('push-ms service against a fake FCM server', () => {
  const fcm = new FakeFcm();
  let db: SqlDatabase;
  let devices: DeviceStore;
  let mutes: MuteStore;
  const running: { service: PushService; bus: MemoryBus }[] = [];

  /** A push-ms on the fake FCM, not started yet; `options` replace its defaults. */
  const buildService = (options: Partial<PushDeps> = {}) => {
    const bus = new MemoryBus();
    const service = createPushService({
      bus,
      devices,
      mutes,
      provider: createFcmProvider({
        credential: fakeCredential,
        projectId: FAKE_PROJECT,
        httpAgent: fcm.agent(),
        legacyHttpTransport: true,
      }),
      logger: silentLogger(),
      metrics: createMetricsRegistry('push-ms', { collectDefaults: false }),
      readiness: new Readiness(),
      port: 0,
      host: '127.0.0.1',
      internalSecret: SECRET,
      windowMs: WINDOW_MS,
      maxAttempts: 3,
      retryBaseMs: 10,
      ...options,
    });
    running.push({ service, bus });
    return { service, bus };
  };
  const startService = async (options: Partial<PushDeps> = {}) => {
    const built = buildService(options);
    await built.service.start();
    return built;
  };
  const register = (service: PushService, user: string, deviceId: string, token: string, secret = SECRET) =>
    service.http.inject({
      method: 'PUT',
      url: `/internal/devices/${deviceId}`,
      headers: { [INTERNAL_SECRET_HEADER]: secret, [INTERNAL_USER_HEADER]: user },
      payload: { token, platform: 'android' },
    });
  const metricsOf = async (service: PushService) => (await service.http.inject('/metrics')).body;

  beforeAll(async () => {
    await fcm.start();
    db = await createPgliteDatabase();
    devices = createSqlDeviceStore(db);
    mutes = createSqlMuteStore(db);
    await devices.init(); // push-ms's schema, for the tests that write mutes before a service starts
  });
  afterAll(async () => {
    for (const { service } of running) await service.stop();
    await db.close();
    await fcm.close();
  });
  beforeEach(() => {
    fcm.requests.length = 0;
    fcm.answer = () => ({ status: 200, body: {} });
  });

  it('answers /healthz while its migrations wait for their lock, and /readyz only once they are done', async () => {
    let finishMigrating!: () => void;
    const migrating = new Promise<void>((resolve) => (finishMigrating = resolve));
    // The migrations lock is shared by every service: another one may hold it for a while.
    const { service } = buildService({
      devices: { ...devices, init: () => migrating },
      readiness: new Readiness(500),
    });
    const started = service.start();
    await waitFor(() => service.http.server.listening, 2000, 'push-ms to listen while migrating');
    expect((await service.http.inject('/healthz')).statusCode).toBe(200);
    expect((await service.http.inject('/readyz')).statusCode).toBe(503);
    finishMigrating();
    await started;
    expect((await service.http.inject('/readyz')).statusCode).toBe(200);
  });

  it('registers and removes devices through the internal API, every one of an erased account at once', async () => {
    const { service } = await startService();
    expect((await register(service, 'bob', 'phone', 'bob-phone')).statusCode).toBe(204);
    expect((await register(service, 'bob', 'tablet', 'bob-tablet')).statusCode).toBe(204);
    expect((await register(service, 'bob', 'old', 'bob-old')).statusCode).toBe(204);
    const removed = await service.http.inject({
      method: 'DELETE',
      url: '/internal/devices/old',
      headers: { [INTERNAL_SECRET_HEADER]: SECRET, [INTERNAL_USER_HEADER]: 'bob' },
    });
    expect(removed.statusCode).toBe(204);
    expect((await devices.devices('bob')).map((d) => d.token)).toEqual(['bob-phone', 'bob-tablet']);

    expect((await register(service, 'bob', 'phone', 'x', 'wrong-secret-value')).statusCode).toBe(403);
    const bad = await service.http.inject({
      method: 'PUT',
      url: '/internal/devices/phone',
      headers: { [INTERNAL_SECRET_HEADER]: SECRET, [INTERNAL_USER_HEADER]: 'bob' },
      payload: { token: '' },
    });
    expect(bad.statusCode).toBe(400);
    expect(bad.json().error).toEqual({ code: 'invalid_request', message: 'platform: is required' });
    const badId = await service.http.inject({
      method: 'DELETE',
      url: '/internal/devices/bad%20id',
      headers: { [INTERNAL_SECRET_HEADER]: SECRET, [INTERNAL_USER_HEADER]: 'bob' },
    });
    expect(badId.json().error.message).toMatch(/^params deviceId: must match/);

    const erase = () =>
      service.http.inject({
        method: 'DELETE',
        url: '/internal/account',
        headers: { [INTERNAL_SECRET_HEADER]: SECRET, [INTERNAL_USER_HEADER]: 'bob' },
      });
    expect((await erase()).json()).toEqual({ erased: 2 });
    expect(await devices.devices('bob')).toEqual([]);
    expect((await erase()).json()).toEqual({ erased: 0 });
  });

  it('coalesces three messages into one push per device, without message bodies, and no push for receipts', async () => {
    // A window of 500 ms: a pause of the test process (a busy box) before the third message is read
    // must not close it with two.
    const windowMs = 500;
    const { service, bus } = await startService({ windowMs });
    await register(service, 'bob', 'phone', 'bob-phone');
    await register(service, 'bob', 'tablet', 'bob-tablet');
    const frames = [message('bob'), message('bob'), message('bob')];
    await bus.publish(TOPICS.offline, [
      offline(frames[0]),
      offline(frames[1]),
      {
        v: 1,
        kind: 'offline',
        to: 'bob',
        at: 1,
        frame: { type: 'receipt', mid: '~read:carol:x', status: 'read', mids: ['bob:1'], by: 'carol', at: 1 },
      },
    ]);
    await sleep(50);
    await bus.publish(TOPICS.offline, [offline(frames[2])]);
    await waitFor(() => fcm.requests.length >= 2);
    await sleep(windowMs * 2);
    expect(fcm.tokensSentTo().sort()).toEqual(['bob-phone', 'bob-tablet']);
    for (const request of fcm.requests) {
      expect(request.message.notification).toEqual({ title: 'alice', body: '3 new messages from alice' });
      expect(request.message.data).toEqual({
        kind: 'parley.messages',
        count: '3',
        senders: 'alice',
        mid: frames[2].mid,
      });
    }
    expect(JSON.stringify(fcm.requests)).not.toContain('top secret');

    // the same messages again (a redelivered record, a replay that went offline again): no new push
    await bus.publish(
      TOPICS.offline,
      frames.map((frame) => offline(frame)),
    );
    await sleep(windowMs * 2);
    expect(fcm.requests).toHaveLength(2);
    expect(await metricsOf(service)).toContain(
      'parley_push_notifications_total{result="sent",service="push-ms"} 1',
    );
  });

  it('does not announce a message that went offline longer ago than the maximum age (a backlog)', async () => {
    const { service, bus } = await startService({ includeBody: true });
    await register(service, 'erin', 'phone', 'erin-phone');
    await bus.publish(TOPICS.offline, [
      offline(message('erin', 'last week'), Date.now() - 7 * 24 * 3600_000),
      offline(message('erin', 'just now')),
    ]);
    await waitFor(() => fcm.requests.length === 1);
    await sleep(WINDOW_MS * 2);
    expect(fcm.requests.map((r) => [r.message.token, r.message.notification])).toEqual([
      ['erin-phone', { title: 'alice', body: 'just now' }],
    ]);
    expect(await metricsOf(service)).toContain('parley_push_stale_total{service="push-ms"} 1');
  });

  it("announces no message of a conversation its recipient muted, 1:1 or group, and the others' as before", async () => {
    const { service, bus } = await startService({ includeBody: true });
    await register(service, 'mia', 'phone', 'mia-phone');
    const as = (method: 'PUT' | 'DELETE' | 'GET', url: string) =>
      service.http.inject({
        method,
        url,
        headers: { [INTERNAL_SECRET_HEADER]: SECRET, [INTERNAL_USER_HEADER]: 'mia' },
      });
    expect((await as('PUT', '/internal/mutes/direct/spammer')).statusCode).toBe(204);
    expect((await as('PUT', `/internal/mutes/group/noisy?until=${Date.now() + 3600_000}`)).statusCode).toBe(
      204,
    );
    const inGroup = (group: string, from: string, text: string): DeliveredMessage => ({
      ...message(group, text, from),
      chat: 'group',
    });
    await bus.publish(TOPICS.offline, [
      offline(message('mia', 'buy now', 'spammer')),
      { ...offline(inGroup('noisy', 'someone', 'lol')), to: 'mia' },
      // A 1:1 from the group's member, and another group's message: not muted.
      { ...offline(inGroup('family', 'mum', 'dinner at 8')), to: 'mia' },
    ]);
    await waitFor(() => fcm.requests.length === 1);
    await sleep(WINDOW_MS * 2);
    expect(fcm.requests.map((r) => r.message.notification)).toEqual([{ title: 'mum', body: 'dinner at 8' }]);
    expect(await metricsOf(service)).toContain('parley_push_muted_total{service="push-ms"} 2');

    expect((await as('GET', '/internal/mutes')).json()).toEqual({
      mutes: [
        { chat: 'direct', id: 'spammer', until: null },
        { chat: 'group', id: 'noisy', until: expect.any(Number) },
      ],
    });
    // Unmuted: announced again.
    expect((await as('DELETE', '/internal/mutes/direct/spammer')).statusCode).toBe(204);
    await bus.publish(TOPICS.offline, [offline(message('mia', 'still here', 'spammer'))]);
    await waitFor(() => fcm.requests.length === 2);
    expect(fcm.requests[1].message.notification).toEqual({ title: 'spammer', body: 'still here' });
  });

  it('announces a batch unchecked when the mutes cannot be read, or not within muteCheckTimeoutMs, counting it', async () => {
    await mutes.mute('ned', { chat: 'direct', id: 'alice' }, null, 10);
    const failing: MuteStore = {
      ...mutes,
      mutedAmong: () => Promise.reject(new Error('connection refused')),
    };
    const hanging: MuteStore = { ...mutes, mutedAmong: () => new Promise<never>(() => undefined) };
    for (const broken of [failing, hanging]) {
      fcm.requests.length = 0;
      const { service, bus } = await startService({ mutes: broken, muteCheckTimeoutMs: 50 });
      await register(service, 'ned', 'phone', 'ned-phone');
      await bus.publish(TOPICS.offline, [offline(message('ned', 'hi'))]);
      await waitFor(() => fcm.requests.length === 1);
      expect(await metricsOf(service)).toContain('parley_push_mute_checks_failed_total{service="push-ms"} 1');
    }
  });

  it('refuses a mute past the limit (409 too_many_mutes) and a bad conversation with the field named, and forgets mutes with the account', async () => {
    const { service } = await startService({ maxMutesPerUser: 2 });
    const as = (method: 'PUT' | 'DELETE', url: string) =>
      service.http.inject({
        method,
        url,
        headers: { [INTERNAL_SECRET_HEADER]: SECRET, [INTERNAL_USER_HEADER]: 'oli' },
      });
    expect((await as('PUT', '/internal/mutes/direct/a')).statusCode).toBe(204);
    expect((await as('PUT', '/internal/mutes/group/b')).statusCode).toBe(204);
    const third = await as('PUT', '/internal/mutes/direct/c');
    expect([third.statusCode, third.json().error]).toEqual([
      409,
      { code: 'too_many_mutes', message: 'at most 2 conversations may be muted; unmute one first' },
    ]);
    // A change of one muted, not one more.
    expect((await as('PUT', `/internal/mutes/group/b?until=${Date.now() + 60_000}`)).statusCode).toBe(204);
    // A time already past mutes nothing: refused (seconds where milliseconds were meant).
    const past = await as('PUT', '/internal/mutes/group/b?until=1700000000');
    expect([past.statusCode, past.json().error.message]).toEqual([
      400,
      expect.stringMatching(
        /^until: 1700000000 is not in the future \(milliseconds since the epoch; now is \d+\)$/,
      ),
    ]);
    const bad = await as('PUT', '/internal/mutes/channel/x');
    expect([bad.statusCode, bad.json().error.message]).toEqual([400, expect.stringContaining('chat')]);
    expect((await as('DELETE', '/internal/account')).statusCode).toBe(200);
    expect(await mutes.mutesOf('oli', 0)).toEqual([]);
  });

  it('includes the message text when configured to', async () => {
    const { service, bus } = await startService({ includeBody: true });
    await register(service, 'carol', 'phone', 'carol-phone');
    await bus.publish(TOPICS.offline, [offline(message('carol', 'see you at 8'))]);
    await waitFor(() => fcm.requests.length === 1);
    expect(fcm.requests[0].message).toMatchObject({
      token: 'carol-phone',
      notification: { title: 'alice', body: 'see you at 8' },
    });
  });

  it('waits out a database blip while looking up the devices, as it does an FCM one', async () => {
    const { service, bus } = await startService();
    await register(service, 'ivy', 'phone', 'ivy-phone');
    const lookup = devices.devices.bind(devices);
    let blips = 1;
    const spy = jest.spyOn(devices, 'devices').mockImplementation(async (user) => {
      if (blips-- > 0) throw new TransientError('Postgres restarting');
      return lookup(user);
    });
    try {
      await bus.publish(TOPICS.offline, [offline(message('ivy'))]);
      await waitFor(() => fcm.tokensSentTo().includes('ivy-phone'));
    } finally {
      spy.mockRestore();
    }
  });

  it('waits out a database outage longer than its FCM retries while looking up the devices (a failover)', async () => {
    const { service, bus } = await startService(); // maxAttempts 3, retryBaseMs 10
    await register(service, 'ivo', 'phone', 'ivo-phone');
    const lookup = devices.devices.bind(devices);
    let failures = 6; // about 0.6 s of backoff: more tries than maxAttempts
    const spy = jest.spyOn(devices, 'devices').mockImplementation(async (user) => {
      if (failures-- > 0) throw new TransientError('Postgres failing over');
      return lookup(user);
    });
    try {
      await bus.publish(TOPICS.offline, [offline(message('ivo'))]);
      await waitFor(() => fcm.tokensSentTo().includes('ivo-phone'), 10_000, 'the push after the outage');
      // Counted apart from FCM's: the alert on push retries points at FCM, not at Postgres.
      const metrics = await metricsOf(service);
      expect(metrics).toContain('parley_push_retries_total{of="device_lookup",service="push-ms"} 6');
      expect(metrics).toContain('parley_push_retries_total{of="fcm_send",service="push-ms"} 0');
    } finally {
      spy.mockRestore();
    }
  });

  it('gives a push up, counted failed, once a database outage outlasts lookupPatienceMs', async () => {
    const { service, bus } = await startService({ lookupPatienceMs: 200 });
    await register(service, 'uma', 'phone', 'uma-phone');
    const spy = jest.spyOn(devices, 'devices').mockRejectedValue(new TransientError('Postgres down'));
    try {
      await bus.publish(TOPICS.offline, [offline(message('uma'))]);
      await waitFor(async () =>
        (await metricsOf(service)).includes(
          'parley_push_notifications_total{result="failed",service="push-ms"} 1',
        ),
      );
      expect(fcm.tokensSentTo()).not.toContain('uma-phone');
    } finally {
      spy.mockRestore();
    }
  });

  it('forgets tokens FCM reports unregistered and still reaches the other devices', async () => {
    const { service, bus } = await startService();
    await register(service, 'dave', 'phone', 'dave-phone');
    await register(service, 'dave', 'gone', 'dave-gone');
    fcm.answer = (request) =>
      request.message.token === 'dave-gone' ? FCM_ERRORS.unregistered : { status: 200, body: {} };
    await bus.publish(TOPICS.offline, [offline(message('dave'))]);
    await waitFor(async () => (await devices.devices('dave')).length === 1);
    expect((await devices.devices('dave')).map((d) => d.token)).toEqual(['dave-phone']);
    expect(fcm.tokensSentTo().sort()).toEqual(['dave-gone', 'dave-phone']);
    await waitFor(async () =>
      (await metricsOf(service)).includes('parley_push_tokens_removed_total{service="push-ms"} 1'),
    );
  });

  it('still retries the other devices, and counts the push sent, when forgetting an invalid token fails (a database blip)', async () => {
    const { service, bus } = await startService();
    await register(service, 'kai', 'phone', 'kai-phone');
    await register(service, 'kai', 'gone', 'kai-gone');
    fcm.answer = (request, n) => {
      if (request.message.token === 'kai-gone') return FCM_ERRORS.unregistered;
      return n === 0 ? FCM_ERRORS.internal : { status: 200, body: {} };
    };
    const spy = jest
      .spyOn(devices, 'removeTokens')
      .mockRejectedValueOnce(new TransientError('Postgres restarting'));
    try {
      await bus.publish(TOPICS.offline, [offline(message('kai'))]);
      await waitFor(
        () => fcm.tokensSentTo().filter((t) => t === 'kai-phone').length === 2,
        2000,
        "kai-phone's retry",
      );
      await waitFor(async () =>
        (await metricsOf(service)).includes(
          'parley_push_notifications_total{result="sent",service="push-ms"} 1',
        ),
      );
      expect(await metricsOf(service)).not.toContain('parley_push_notifications_total{result="failed"');
    } finally {
      spy.mockRestore();
    }
  });

  it('retries a transient FCM error with backoff, and counts a push that keeps failing without holding up others', async () => {
    const { service, bus } = await startService();
    await register(service, 'erin', 'phone', 'erin-phone');
    await register(service, 'frank', 'phone', 'frank-phone');
    await register(service, 'gina', 'phone', 'gina-phone');
    fcm.answer = (request, n) => {
      if (request.message.token === 'erin-phone' && n === 0) return FCM_ERRORS.internal;
      // Slow, then failing: its three tries take over a second, gina's push its window (150 ms), so
      // a pause of the test process (a busy box) does not let frank's run out first.
      if (request.message.token === 'frank-phone') return { ...FCM_ERRORS.internal, delayMs: 500 };
      return { status: 200, body: {} };
    };
    const frankTries = () => fcm.requests.filter((r) => r.message.token === 'frank-phone').length;
    await bus.publish(TOPICS.offline, [offline(message('erin')), offline(message('frank'))]);
    await waitFor(() => frankTries() === 1);
    await bus.publish(TOPICS.offline, [offline(message('gina'))]);
    await waitFor(() => fcm.tokensSentTo().includes('gina-phone'));
    expect(frankTries()).toBeLessThan(3); // gina's push went out while frank's was still being retried
    await waitFor(() => frankTries() === 3);
    expect(fcm.tokensSentTo().filter((t) => t === 'erin-phone')).toHaveLength(2);
    await waitFor(async () => {
      const metrics = await metricsOf(service);
      return (
        metrics.includes('parley_push_notifications_total{result="sent",service="push-ms"} 2') &&
        metrics.includes('parley_push_notifications_total{result="failed",service="push-ms"} 1')
      );
    });
    const metrics = await metricsOf(service);
    expect(metrics).toContain('parley_push_retries_total{of="fcm_send",service="push-ms"} 3');
    expect(metrics).toContain('parley_push_retries_total{of="device_lookup",service="push-ms"} 0');
    expect(metrics).toContain('parley_push_device_sends_total{result="failed",service="push-ms"} 1');
    expect((await devices.devices('frank')).length).toBe(1); // a failing push is no reason to forget a token
  });

  it('leaves a push a stop cut short to the next push-ms, which sends it, and none done before it', async () => {
    // A retry 5 s on: the stop comes while ivy's push waits for it.
    const metrics = createMetricsRegistry('push-ms', { collectDefaults: false });
    const first = await startService({ retryBaseMs: 5000, metrics });
    await register(first.service, 'ivy', 'phone', 'ivy-phone');
    await register(first.service, 'jack', 'phone', 'jack-phone');
    fcm.answer = (request) =>
      request.message.token === 'ivy-phone' ? FCM_ERRORS.internal : { status: 200, body: {} };
    // jack's record first: one after ivy's would be read, and pushed, again with it.
    await first.bus.publish(TOPICS.offline, [offline(message('jack'))]);
    await first.bus.publish(TOPICS.offline, [offline(message('ivy'))]);
    await waitFor(() => fcm.tokensSentTo().includes('jack-phone') && fcm.requests.length === 2);
    expect(await metrics.metrics()).toContain('parley_push_unfinished{service="push-ms"} 1'); // ivy's
    running.splice(running.indexOf(first), 1);
    await first.service.stop(); // a deploy: ivy's push gets one more try, fails, and is left
    expect(await metrics.metrics()).toContain(
      'parley_push_notifications_total{result="interrupted",service="push-ms"} 1',
    );
    fcm.answer = () => ({ status: 200, body: {} });
    fcm.requests.length = 0;
    await startService({ bus: first.bus }); // the same group reads on from the first one's commit
    await waitFor(() => fcm.tokensSentTo().includes('ivy-phone'));
    await sleep(WINDOW_MS * 3);
    expect(fcm.tokensSentTo()).toEqual(['ivy-phone']);
  });

  it('does not push a message the user acked while its push waited for a retry', async () => {
    // A retry 1 s on: a pause of the test process (a busy box) before the ack is read must not let
    // the retry go first.
    const { service, bus } = await startService({ retryBaseMs: 1000 });
    await register(service, 'hugo', 'phone', 'hugo-phone');
    fcm.answer = (_request, n) => (n === 0 ? FCM_ERRORS.internal : { status: 200, body: {} });
    const frame = message('hugo');
    await bus.publish(TOPICS.offline, [offline(frame)]);
    await waitFor(() => fcm.requests.length === 1); // failed once: the retry waits 1 s
    await bus.publish(TOPICS.offline, [
      { v: 1, kind: 'offline-ack', user: 'hugo', mids: [frame.mid], at: Date.now() },
    ]);
    await waitFor(async () =>
      (await metricsOf(service)).includes(
        'parley_push_notifications_total{result="acked",service="push-ms"} 1',
      ),
    );
    expect(fcm.requests).toHaveLength(1); // hugo has read it: no notification
  });

  it('sends a push that waited (a retry, a 429) to no token unregistered or moved to someone else meanwhile', async () => {
    const { service, bus } = await startService({ throttleMs: 2000, retryBaseMs: 500 });
    const unregister = (user: string, deviceId: string) =>
      service.http.inject({
        method: 'DELETE',
        url: `/internal/devices/${deviceId}`,
        headers: { [INTERNAL_SECRET_HEADER]: SECRET, [INTERNAL_USER_HEADER]: user },
      });
    await register(service, 'lena', 'phone', 'shared-phone');
    await register(service, 'lena', 'tablet', 'lena-tablet');
    await register(service, 'max', 'phone', 'max-phone');
    await register(service, 'olga', 'phone', 'olga-phone');
    // lena's phone meets a 429 (every push waits 2 s), her tablet and max's phone an FCM error.
    fcm.answer = (request, n) => {
      if (n > 0) return { status: 200, body: {} };
      return request.message.token === 'shared-phone' ? FCM_ERRORS.quotaExceeded : FCM_ERRORS.internal;
    };
    await bus.publish(TOPICS.offline, [offline(message('lena', 'hi', 'carol')), offline(message('max'))]);
    await waitFor(() => fcm.requests.length === 3, 2000, 'the first tries');
    // olga's push comes during the pause; meanwhile lena's phone signs in as nina (its token moves),
    // and max and olga sign out on their phones.
    await bus.publish(TOPICS.offline, [offline(message('olga'))]);
    await sleep(WINDOW_MS * 2);
    await register(service, 'nina', 'phone', 'shared-phone');
    await unregister('max', 'phone');
    await unregister('olga', 'phone');
    await waitFor(() => fcm.tokensSentTo().filter((t) => t === 'lena-tablet').length === 2, 5000);
    await sleep(1000);
    // lena's tablet gets her retry; nina's phone and the phones signed out get nothing more.
    expect(fcm.tokensSentTo().sort()).toEqual(['lena-tablet', 'lena-tablet', 'max-phone', 'shared-phone']);
  });

  it('holds every push for the throttle time after FCM answers 429, then sends them', async () => {
    // Held 1.5 s; at least 1 s of it seen here: the throttle starts when FCM's 429 is read, a little
    // before `throttledAt`, by more where the test process is paused (a busy box).
    const { service, bus } = await startService({ throttleMs: 1500 });
    await register(service, 'ida', 'phone', 'ida-phone');
    await register(service, 'jon', 'phone', 'jon-phone');
    fcm.answer = (request, n) =>
      request.message.token === 'ida-phone' && n === 0 ? FCM_ERRORS.quotaExceeded : { status: 200, body: {} };
    await bus.publish(TOPICS.offline, [offline(message('ida'))]);
    await waitFor(() => fcm.requests.length === 1);
    const throttledAt = Date.now();
    await bus.publish(TOPICS.offline, [offline(message('jon'))]); // its window closes during the pause
    // ida's again and jon's, in either order (ida's first try, refused, already counts as sent to).
    await waitFor(() => fcm.requests.length >= 3, 5000, "ida's retry and jon's push");
    expect(Date.now() - throttledAt).toBeGreaterThanOrEqual(1000);
    expect(fcm.requests.map((r) => r.message.token)).toEqual([
      'ida-phone',
      expect.any(String),
      expect.any(String),
    ]);
    // Counted once FCM has answered, a little after it saw the request.
    await waitFor(async () =>
      (await metricsOf(service)).includes(
        'parley_push_notifications_total{result="sent",service="push-ms"} 2',
      ),
    );
  });
});
