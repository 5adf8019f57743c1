import { randomUUID } from 'node:crypto';
import { Type } from '@sinclair/typebox';
import {
  ErasedCount,
  MAX_PRESENCE_USERS,
  ParleyError,
  PresenceQuery,
  PresenceResponse,
  TOPICS,
  USER_ID_PATTERN,
} from '@parley/contracts';
import { EventBus, KafkaSettingsSchema } from '@parley/kafka';
import {
  actingUser,
  buildHttpServer,
  CommonConfig,
  HttpServer,
  InternalConfig,
  readableFile,
  requireInternalSecret,
  Runtime,
  Service,
  serviceLifecycle,
} from '@parley/service-kit';
import { Delivery, DeliveryReader, DeliverySettings, withoutStaleNotices } from './delivery';
import { coalescingSends, GatewayClient } from './gateway-client';
import { SessionStore } from './store/session-store';

export const SessionConfig = Type.Object({
  ...CommonConfig,
  ...KafkaSettingsSchema,
  ...InternalConfig,
  PORT: Type.Integer({
    minimum: 0,
    maximum: 65535,
    default: 9103,
    description: 'Internal API, probes, metrics',
  }),
  REDIS_URL: Type.Optional(
    Type.String({
      pattern: '^rediss?://',
      description:
        'Redis; in-process store when unset (one replica only; a stop hands what awaits an ack to storage, a crash loses it)',
    }),
  ),
  REDIS_TLS_CA_FILE: Type.Optional(
    readableFile({
      description:
        "PEM file of the CA that signed Redis's TLS certificate, where Node does not trust it by itself (Memorystore); implies TLS",
    }),
  ),
  REDIS_KEY_PREFIX: Type.String({
    default: 'parley:session:',
    description: 'Prefix of every key session-ms writes',
  }),
  ACK_TIMEOUT_MS: Type.Integer({
    minimum: 10,
    default: 5000,
    description:
      'Wait for an ack before pushing again, counted on how far acks have been read (a backlog does not trigger retries)',
  }),
  MAX_ATTEMPTS: Type.Integer({
    minimum: 1,
    default: 3,
    description: 'Pushes before a deliverable goes offline',
  }),
  ACKED_TTL_MS: Type.Integer({
    minimum: 1000,
    default: 24 * 3600 * 1000,
    description:
      'How long acked mids are remembered for dedup (without Redis: the last 875,000 to 1,000,000 at most)',
  }),
  GATEWAY_TTL_MS: Type.Integer({
    minimum: 1000,
    default: 30_000,
    description:
      'A gateway silent this long, while other heartbeats are read, is gone (while none are read, none is judged)',
  }),
  RETRY_TICK_MS: Type.Integer({
    minimum: 10,
    default: 200,
    description: 'How often due retries are looked for',
  }),
});

export interface SessionDeps extends Omit<Runtime, 'closer'> {
  bus: EventBus;
  store: SessionStore;
  gateways: GatewayClient;
  settings: DeliverySettings;
  internalSecret: string;
  port: number;
  host?: string;
}

export interface SessionService extends Service {
  http: HttpServer;
  delivery: Delivery;
}

export function createSessionService(deps: SessionDeps): SessionService {
  const { bus, store, logger } = deps;
  const reader: DeliveryReader = {
    replica: randomUUID(),
    readUpTo: () => deliveries.handledUpTo(),
    rereadFrom: (time) => deliveries.rereadFrom(time),
  };
  const gateways = coalescingSends(deps.gateways);
  const delivery = new Delivery(store, gateways, bus, deps.settings, logger, deps.metrics, reader);
  const http = buildHttpServer(deps);
  requireInternalSecret(http, deps.internalSecret);
  deps.readiness.register('store', () => store.ping());

  http.get(
    '/internal/presence',
    { schema: { querystring: PresenceQuery, response: { 200: PresenceResponse } } },
    async (request) => {
      return { presence: await store.presence(parseUserList(request.query.users)) };
    },
  );
  http.delete(
    '/internal/account',
    { schema: { response: { 200: ErasedCount } } },
    async (request): Promise<ErasedCount> => ({ erased: await delivery.erase(actingUser(request)) }),
  );

  const deliveries = bus.subscribe({
    groupId: 'session-ms',
    topic: TOPICS.delivery,
    handle: (batch) => delivery.handle(withoutStaleNotices(batch)),
  });
  const connections = bus.subscribe({
    groupId: 'session-ms-connections',
    topic: TOPICS.connections,
    handle: (batch) => delivery.handleConnections(batch.map((e) => e.event)),
  });
  const retries = retryLoop(delivery, deps.settings.retryTickMs, logger);
  // Stopped after the consumers (workers stop in reverse order): nothing new is tracked by then.
  const handOff = {
    stop: async () => {
      await delivery.connectPushesDone();
      const handed = await delivery.handOffPending();
      if (handed > 0) logger.info({ handed }, 'deliverables awaiting an ack handed to storage');
    },
  };

  return {
    http,
    delivery,
    ...serviceLifecycle(http, deps, deps.readiness, [handOff, connections, deliveries, retries]),
  };
}

/** Looks for due retries every tick; a slow round delays the next instead of overlapping it. */
function retryLoop(delivery: Delivery, tickMs: number, logger: Runtime['logger']) {
  let timer: NodeJS.Timeout | undefined;
  let round: Promise<void> | undefined;
  let running = false;
  const tick = async () => {
    try {
      while (running && (await delivery.retryDue()) >= 500);
    } catch (err) {
      logger.warn({ err }, 'retry round failed');
    }
    if (running) timer = setTimeout(() => (round = tick()), tickMs);
  };
  return {
    start() {
      running = true;
      timer = setTimeout(() => (round = tick()), tickMs);
    },
    async stop() {
      running = false;
      clearTimeout(timer);
      await round;
      await delivery.leave().catch((err) => logger.warn({ err }, 'could not withdraw the read position'));
    },
  };
}

const userIdPattern = new RegExp(USER_ID_PATTERN);

export function parseUserList(users: string): string[] {
  const list = [
    ...new Set(
      users
        .split(',')
        .map((u) => u.trim())
        .filter(Boolean),
    ),
  ];
  if (list.length > MAX_PRESENCE_USERS)
    throw new ParleyError('invalid_request', `users: at most ${MAX_PRESENCE_USERS} users`);
  const bad = list.find((u) => !userIdPattern.test(u));
  if (bad !== undefined)
    throw new ParleyError('invalid_request', `users: ${JSON.stringify(bad)} must match ${USER_ID_PATTERN}`);
  return list;
}
