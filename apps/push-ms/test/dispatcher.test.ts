import { setTimeout as sleep } from 'node:timers/promises';
import { createMetricsRegistry, silentLogger } from '@parley/service-kit';
import { waitFor } from '@parley/test-kit';
import type { DeviceStore } from '../src/device-store';
import { createDispatcher } from '../src/dispatcher';
import type { PushNotification, PushProvider, TokenOutcome } from '../src/provider';

const notification: PushNotification = {
  title: 'alice',
  body: 'New message',
  data: {},
  collapseId: 'alice:1',
};

/** A dispatcher over these parts, with its own metrics; retries 10 ms apart, at most 100 in flight. */
function dispatcherWith(
  provider: PushProvider,
  devices: DeviceStore,
  settings: { maxAttempts: number; throttleMs: number },
) {
  const metrics = createMetricsRegistry('push-ms', { collectDefaults: false });
  const dispatcher = createDispatcher({
    provider,
    devices,
    logger: silentLogger(),
    metrics,
    retryBaseMs: 10,
    maxInFlight: 100,
    ...settings,
  });
  return { dispatcher, metrics };
}

describe('push dispatcher', () => {
  it('holds at most maxInFlight pushes while FCM throttles, and counts the ones it drops', async () => {
    const lookedUp: string[] = [];
    const devices: DeviceStore = {
      init: async () => undefined,
      register: async () => undefined,
      remove: async () => undefined,
      devices: async (user) => {
        lookedUp.push(user);
        return [{ deviceId: 'phone', token: `${user}-phone`, platform: 'android' }];
      },
      removeTokens: async () => 0,
      removeUser: async () => 0,
    };
    const sent: string[][] = [];
    // FCM answers 429 (over quota): every push waits a minute, and then another after the next 429.
    const provider: PushProvider = {
      name: 'throttled',
      send: async (tokens) => {
        sent.push(tokens);
        return tokens.map((): TokenOutcome => 'throttled');
      },
      close: async () => undefined,
    };
    const { dispatcher, metrics } = dispatcherWith(provider, devices, { maxAttempts: 4, throttleMs: 60_000 });
    try {
      dispatcher.dispatch('u0', notification, ['alice:m0']);
      await waitFor(() => sent.length === 1, 2000, 'the first push and its 429');
      // Offline messages keep coming: a window per user, each closing into a push that must wait.
      for (let i = 1; i <= 5000; i++) dispatcher.dispatch(`u${i}`, notification, [`alice:m${i}`]);
      await sleep(50);
      // Each push under way holds its notification, its mids and its user's tokens until the pause
      // ends: an hour of 429s held every push of the hour, and then sent them in one storm.
      expect(lookedUp.length).toBeLessThanOrEqual(100);
      expect(await metrics.getSingleMetricAsString('parley_push_notifications_total')).toContain(
        'parley_push_notifications_total{result="dropped",service="push-ms"} 4901',
      );
    } finally {
      await dispatcher.drain(); // cuts the pause short
    }
  });

  it('counts a push whose every device token was invalid (forgotten) as no_devices, not failed', async () => {
    const tokens = new Map([['bob', ['bob-old-phone', 'bob-old-tablet']]]);
    const devices: DeviceStore = {
      init: async () => undefined,
      register: async () => undefined,
      remove: async () => undefined,
      devices: async (user) =>
        (tokens.get(user) ?? []).map((token) => ({ deviceId: token, token, platform: 'android' as const })),
      removeTokens: async (user, gone) => {
        const kept = (tokens.get(user) ?? []).filter((token) => !gone.includes(token));
        const removed = (tokens.get(user)?.length ?? 0) - kept.length;
        tokens.set(user, kept);
        return removed;
      },
      removeUser: async () => 0,
    };
    // The app was uninstalled on both devices: FCM answers every token as unregistered.
    const provider: PushProvider = {
      name: 'unregistered',
      send: async (sent) => sent.map((): TokenOutcome => 'invalid'),
      close: async () => undefined,
    };
    const { dispatcher, metrics } = dispatcherWith(provider, devices, { maxAttempts: 3, throttleMs: 1000 });
    dispatcher.dispatch('bob', notification, ['alice:m1']);
    await dispatcher.drain();
    expect(tokens.get('bob')).toEqual([]);
    const counted = await metrics.getSingleMetricAsString('parley_push_notifications_total');
    // ParleyPushSendsFailing reads result="failed" as FCM failing: an uninstalled app is not that.
    expect(counted).toContain('parley_push_notifications_total{result="no_devices",service="push-ms"} 1');
    expect(counted).not.toContain('result="failed"');
  });
});
