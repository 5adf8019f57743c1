import { setMaxListeners } from 'node:events';
import type { Logger } from 'pino';
import { Counter, Registry } from 'prom-client';
import { senderOfMid } from '@parley/contracts';
import { isTransient, NO_TRACE, type MessageTrace } from '@parley/service-kit';
import type { DeviceStore } from './device-store';
import type { PushNotification, PushProvider, TokenOutcome } from './provider';

export interface DispatcherOptions {
  provider: PushProvider;
  devices: DeviceStore;
  logger: Logger;
  metrics: Registry;
  /** Tries per token for transient failures. */
  maxAttempts: number;
  /** First backoff; doubled per retry. */
  retryBaseMs: number;
  /** How long every send waits after FCM answers 429 (it asks for a minute at least). */
  throttleMs?: number;
  /**
   * Pushes under way at most (default 10,000); past it a push is dropped and counted (`dropped`):
   * the message is stored and reaches the app by sync. While FCM throttles (429) or hangs, every
   * push waits, and without a cap an hour of them was held in memory and then sent in one storm.
   */
  maxInFlight?: number;
  /**
   * How long a push waits out a database outage while it looks up the user's devices (default
   * 90 s: a managed Postgres failover takes about a minute); the retries back off up to 5 s.
   */
  lookupPatienceMs?: number;
  /** Traced users' pushes are logged with their outcome. */
  trace?: MessageTrace;
}

export const DEFAULT_MAX_PUSHES_IN_FLIGHT = 10_000;
export const DEFAULT_LOOKUP_PATIENCE_MS = 90_000;
const MAX_LOOKUP_BACKOFF_MS = 5_000;

export interface Dispatcher {
  /**
   * Sends in the background; failures are logged and counted, never thrown. `mids`: the messages it
   * announces; once the user has acked them all (`acked`), it is not sent, nor sent again. `done`
   * is called once the push has its outcome (sent, failed, no devices, acked, dropped); not when a
   * stop cuts it short, so that its records are read, and it is sent, again.
   */
  dispatch(user: string, notification: PushNotification, mids: string[], done?: () => void): void;
  /** The user acked these mids: pushes still under way for nothing else stop. */
  acked(user: string, mids: string[]): void;
  /** Waits for pushes under way; backoff waits are cut short and what is left counts as interrupted. */
  drain(): Promise<void>;
}

/**
 * Sends a user's notification to every token of theirs: invalid tokens are forgotten, transient
 * failures retried with exponential backoff, and a push that finally fails is logged and counted.
 */
export function createDispatcher(options: DispatcherOptions): Dispatcher {
  const metrics = createPushMetrics(options.metrics);
  const trace = options.trace ?? NO_TRACE;
  /** A push's outcome, counted (and traced). */
  const ended = (user: string, mids: string[], result: NotificationResult) => {
    metrics.notifications.inc({ result });
    const traced = trace.on ? trace.tracedAmong([user, ...mids.map(senderOfMid)]) : [];
    if (traced.length > 0) trace.hop('push', { user, mids, result, traced });
  };
  const inFlight = new Set<Promise<void>>();
  const stopping = new AbortController();
  /** Per user, the mids not yet acked of each push under way. */
  const unacked = new Map<string, Set<Set<string>>>();
  /** FCM answered 429: nothing is sent before this time. */
  let pausedUntil = 0;
  const throttleMs = options.throttleMs ?? 60_000;
  const maxInFlight = options.maxInFlight ?? DEFAULT_MAX_PUSHES_IN_FLIGHT;
  let full = false;
  // Every push waiting out a backoff or a 429 listens for the stop: many at once is no leak.
  setMaxListeners(maxInFlight + 1, stopping.signal);
  /** Waits out FCM's 429 pause; true when there was one to wait out. */
  const untilUnpaused = async () => {
    let waited = false;
    while (Date.now() < pausedUntil && !stopping.signal.aborted) {
      waited = true;
      await sleep(pausedUntil - Date.now(), stopping.signal);
    }
    return waited;
  };

  /**
   * The user's devices. A database outage (a restart, a failover) is waited out for up to
   * `lookupPatienceMs`: given up after a few tries, as an FCM failure is, every push due during a
   * failover was lost. The pushes waiting meanwhile stay under the in-flight cap.
   */
  const devicesOf = async (user: string) => {
    const giveUpAt = performance.now() + (options.lookupPatienceMs ?? DEFAULT_LOOKUP_PATIENCE_MS);
    for (let attempt = 1; ; attempt++) {
      try {
        return await options.devices.devices(user);
      } catch (err) {
        const backoff = Math.min(options.retryBaseMs * 2 ** (attempt - 1), MAX_LOOKUP_BACKOFF_MS);
        if (!isTransient(err) || performance.now() + backoff > giveUpAt || stopping.signal.aborted) throw err;
        metrics.retries.inc({ of: 'device_lookup' });
        await sleep(backoff, stopping.signal);
      }
    }
  };

  const sendToDevices = async (
    user: string,
    notification: PushNotification,
    mids: string[],
    pending: Set<string>,
  ) => {
    let tokens = (await devicesOf(user)).map((d) => d.token);
    if (tokens.length === 0) return ended(user, mids, 'no_devices');
    let sent = 0;
    let failed = 0;
    const readMeanwhile = () => pending.size === 0;
    for (let attempt = 1; tokens.length > 0; attempt++) {
      const paused = await untilUnpaused();
      if (readMeanwhile()) break; // what is left is not worth a notification any more
      if (paused || attempt > 1) {
        // Only to tokens still the user's after a wait: a device unregistered meanwhile (signed
        // out, the account erased), or whose token moved to another user (the phone signed in as
        // someone else), must not get it.
        const registered = new Set((await devicesOf(user)).map((d) => d.token));
        tokens = tokens.filter((token) => registered.has(token));
        if (tokens.length === 0) break;
      }
      const outcomes = await options.provider.send(tokens, notification);
      const by = (wanted: TokenOutcome) => tokens.filter((_, i) => outcomes[i] === wanted);
      sent += by('sent').length;
      failed += by('failed').length;
      await forgetInvalid(user, by('invalid'));
      if (by('throttled').length > 0) pausedUntil = Math.max(pausedUntil, Date.now() + throttleMs);
      tokens = [...by('retry'), ...by('throttled')];
      if (tokens.length === 0 || attempt >= options.maxAttempts || stopping.signal.aborted) break;
      metrics.retries.inc({ of: 'fcm_send' }, tokens.length);
      await sleep(options.retryBaseMs * 2 ** (attempt - 1), stopping.signal);
    }
    metrics.tokens.inc({ result: 'sent' }, sent);
    if (tokens.length > 0 && !readMeanwhile() && stopping.signal.aborted) {
      // Cut short by a stop: its records are read again, and it is sent again, by the next instance.
      ended(user, mids, 'interrupted');
      throw new PushInterrupted();
    }
    if (!readMeanwhile()) failed += tokens.length;
    metrics.tokens.inc({ result: 'failed' }, failed);
    ended(user, mids, notificationResult(sent, failed, readMeanwhile()));
    if (failed > 0)
      options.logger.warn({ user, failedDevices: failed, sentDevices: sent }, 'push failed for some devices');
  };

  const forgetInvalid = async (user: string, tokens: string[]) => {
    if (tokens.length === 0) return;
    metrics.tokens.inc({ result: 'invalid' }, tokens.length);
    let removed: number;
    try {
      removed = await options.devices.removeTokens(user, tokens);
    } catch (err) {
      // Not the push's failure: its other devices are still retried. FCM reports them again next time.
      options.logger.warn({ err, user }, 'could not forget device tokens the push provider reported invalid');
      return;
    }
    metrics.tokensRemoved.inc(removed);
    options.logger.info({ user, removed }, 'forgot device tokens the push provider reported invalid');
  };

  return {
    dispatch(user, notification, mids, done = () => undefined) {
      if (inFlight.size >= maxInFlight) {
        ended(user, mids, 'dropped');
        done();
        if (!full)
          options.logger.warn(
            { inFlight: inFlight.size },
            'too many pushes under way (FCM throttling or slow): dropping new ones until they drain',
          );
        full = true;
        return;
      }
      full = false;
      const pending = new Set(mids);
      const ofUser = unacked.get(user) ?? new Set<Set<string>>();
      unacked.set(user, ofUser.add(pending));
      const push = sendToDevices(user, notification, mids, pending)
        .then(done, (err) => {
          if (err instanceof PushInterrupted) return;
          if (stopping.signal.aborted && isTransient(err)) {
            // A device lookup waiting out a database outage when the stop came: sent again, as above.
            ended(user, mids, 'interrupted');
            return;
          }
          ended(user, mids, 'failed');
          options.logger.error({ err, user }, 'push failed');
          done();
        })
        .finally(() => {
          inFlight.delete(push);
          ofUser.delete(pending);
          if (ofUser.size === 0 && unacked.get(user) === ofUser) unacked.delete(user);
        });
      inFlight.add(push);
    },
    acked(user, mids) {
      for (const pending of unacked.get(user) ?? []) for (const mid of mids) pending.delete(mid);
    },
    async drain() {
      stopping.abort();
      await Promise.all([...inFlight]);
    },
  };
}

type NotificationResult = 'sent' | 'failed' | 'no_devices' | 'acked' | 'dropped' | 'interrupted';

/** One push's result: every device token invalid (the app uninstalled everywhere) is no_devices. */
function notificationResult(sent: number, failed: number, readMeanwhile: boolean): NotificationResult {
  if (sent > 0) return 'sent';
  if (readMeanwhile) return 'acked';
  return failed > 0 ? 'failed' : 'no_devices';
}

/** What a retry counts as (`parley_push_retries_total`'s `of`). */
const RETRIED = ['fcm_send', 'device_lookup'] as const;

function createPushMetrics(registry: Registry) {
  const registers = [registry];
  const metrics = {
    notifications: new Counter({
      name: 'parley_push_notifications_total',
      help: 'Coalesced notifications by result: sent (to at least one device), failed, no_devices (none registered, none still registered after a wait, or every token invalid and forgotten), acked (read before it went out), dropped (too many pushes under way), interrupted (cut short by a stop: the next instance sends it)',
      labelNames: ['result'],
      registers,
    }),
    tokens: new Counter({
      name: 'parley_push_device_sends_total',
      help: 'Per-device outcomes: sent, invalid (token forgotten), failed (after retries)',
      labelNames: ['result'],
      registers,
    }),
    retries: new Counter({
      name: 'parley_push_retries_total',
      help: "Retries after transient failures, by what failed: fcm_send (per device of a send to FCM), device_lookup (a read of a user's devices from Postgres)",
      labelNames: ['of'],
      registers,
    }),
    tokensRemoved: new Counter({
      name: 'parley_push_tokens_removed_total',
      help: 'Device tokens forgotten as invalid',
      registers,
    }),
  };
  // Both series from the start: the alert's rate of fcm_send is 0, not absent, before the first retry.
  for (const of of RETRIED) metrics.retries.inc({ of }, 0);
  return metrics;
}

/** A push a stop cut short: not done, so its records are not committed. */
class PushInterrupted extends Error {}

function sleep(ms: number, signal: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    if (signal.aborted) return resolve();
    const timer = setTimeout(done, ms);
    function done() {
      clearTimeout(timer);
      signal.removeEventListener('abort', done);
      resolve();
    }
    signal.addEventListener('abort', done);
  });
}
