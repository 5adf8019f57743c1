import { Type } from '@sinclair/typebox';
import { Counter } from 'prom-client';
import { OfflineTopicEvent, TOPICS } from '@parley/contracts';
import { Envelope, EventBus, KafkaSettingsSchema } from '@parley/kafka';
import { DatabaseConfig } from '@parley/postgres';
import {
  buildHttpServer,
  CommonConfig,
  createRecentSet,
  HttpServer,
  InternalConfig,
  RecentSet,
  Runtime,
  Service,
  serviceLifecycle,
} from '@parley/service-kit';
import { Coalescer, createCoalescer } from './coalescer';
import type { DeviceStore } from './device-store';
import { createDispatcher, Dispatcher } from './dispatcher';
import { buildNotification, summarize } from './notification';
import type { PushProvider } from './provider';
import { registerDeviceRoutes } from './routes';

export const PushConfig = Type.Object({
  ...CommonConfig,
  ...KafkaSettingsSchema,
  ...DatabaseConfig,
  ...InternalConfig,
  PGLITE_DATA_DIR: Type.String({
    default: '.data/pglite/push-ms',
    description: 'Embedded PGlite data directory',
  }),
  PORT: Type.Integer({
    minimum: 0,
    maximum: 65535,
    default: 9106,
    description: 'Internal API, probes and metrics',
  }),
  FCM_SERVICE_ACCOUNT: Type.Optional(
    Type.String({
      minLength: 1,
      description:
        'Firebase service-account JSON, or the path of a file holding it; the log provider when unset',
    }),
  ),
  PUSH_WINDOW_MS: Type.Integer({
    minimum: 0,
    default: 2000,
    description: 'Messages to one user within this window make one notification',
  }),
  PUSH_INCLUDE_BODY: Type.Boolean({
    default: false,
    description: 'Put the latest message text in the notification',
  }),
  PUSH_DEDUP_MS: Type.Integer({
    minimum: 0,
    default: 600_000,
    description:
      'A message announced once is not announced again within this time (redelivery, replays on reconnect)',
  }),
  PUSH_MAX_AGE_MS: Type.Integer({
    minimum: 1,
    default: 600_000,
    description:
      'A message that went offline longer ago than this is not announced (a backlog read after an outage, or by a new consumer group)',
  }),
  PUSH_MAX_ATTEMPTS: Type.Integer({
    minimum: 1,
    default: 4,
    description:
      'Tries per device for transient FCM failures (a 503 counts once: firebase-admin retries it itself; after a 429 every push waits a minute)',
  }),
  PUSH_RETRY_BASE_MS: Type.Integer({
    minimum: 1,
    default: 500,
    description: 'First retry backoff, doubled per retry',
  }),
});

export interface PushDeps extends Omit<Runtime, 'closer'> {
  bus: EventBus;
  devices: DeviceStore;
  provider: PushProvider;
  port: number;
  host?: string;
  internalSecret: string;
  windowMs?: number;
  includeBody?: boolean;
  dedupMs?: number;
  maxAgeMs?: number;
  maxAttempts?: number;
  retryBaseMs?: number;
  /** How long every push waits after FCM answers 429 (default a minute, as FCM asks). */
  throttleMs?: number;
  groupId?: string;
}

export interface PushService extends Service {
  http: HttpServer;
}

/**
 * Announces offline deliverables with push notifications: one per user per window, to every
 * device of theirs. Only messages are announced; receipts, group changes and asynchronous errors
 * wait for the next sync. Pushes run beside the consumer and never hold it up.
 */
export function createPushService(deps: PushDeps): PushService {
  const http = buildHttpServer(deps);
  registerDeviceRoutes(http, deps.devices, deps.internalSecret);
  const dispatcher = createDispatcher({
    provider: deps.provider,
    devices: deps.devices,
    logger: deps.logger,
    metrics: deps.metrics,
    maxAttempts: deps.maxAttempts ?? 4,
    retryBaseMs: deps.retryBaseMs ?? 500,
    throttleMs: deps.throttleMs,
  });
  const announced = createRecentSet(deps.dedupMs ?? 600_000, 200_000);
  const coalescer = createCoalescer(deps.windowMs ?? 2000, (user, messages) => {
    for (const m of messages) announced.add(`${user}\n${m.mid}`);
    dispatcher.dispatch(
      user,
      buildNotification(messages),
      messages.map((m) => m.mid),
    );
  });
  const subscription = deps.bus.subscribe({
    groupId: deps.groupId ?? 'push-ms',
    topic: TOPICS.offline,
    handle: offlineHandler(coalescer, dispatcher, announced, {
      includeBody: deps.includeBody ?? false,
      maxAgeMs: deps.maxAgeMs ?? 600_000,
      stale: new Counter({
        name: 'parley_push_stale_total',
        help: 'Offline messages not announced: they went offline longer ago than PUSH_MAX_AGE_MS',
        registers: [deps.metrics],
      }),
    }),
  });

  // Stopped after the consumer (workers stop in reverse order): nothing joins a window by then.
  const pushes = {
    stop: async () => {
      coalescer.flushAll();
      await dispatcher.drain();
      await deps.provider.close();
    },
  };
  // Listening first, as every service: /healthz answers while the migrations wait for their lock.
  return {
    http,
    ...serviceLifecycle(http, deps, deps.readiness, [
      { start: () => deps.devices.init() },
      pushes,
      subscription,
    ]),
  };
}

/**
 * Messages join their recipient's push window, unless already announced (a redelivered record, or
 * a deliverable replayed on connect that went offline again) or old news (a backlog: announcing
 * a week of messages after an outage would be a storm); an ack takes them out of it.
 */
function offlineHandler(
  coalescer: Coalescer,
  dispatcher: Dispatcher,
  announced: RecentSet,
  options: { includeBody: boolean; maxAgeMs: number; stale: Counter },
) {
  return async (batch: Envelope<OfflineTopicEvent>[]): Promise<void> => {
    const oldest = Date.now() - options.maxAgeMs;
    for (const { event } of batch) {
      if (event.kind === 'offline-ack') {
        coalescer.drop(event.user, event.mids);
        dispatcher.acked(event.user, event.mids);
        continue;
      }
      if (event.frame.type !== 'message' || announced.has(`${event.to}\n${event.frame.mid}`)) continue;
      if (event.at < oldest) options.stale.inc();
      else coalescer.add(event.to, summarize(event.frame, options.includeBody));
    }
  };
}
