import { randomUUID } from 'node:crypto';
import { ErasedCount, parseUserList, PresenceQuery, PresenceResponse, TOPICS } from '@parley/contracts';
import { EventBus } from '@parley/kafka';
import {
  actingUser,
  buildHttpServer,
  HttpServer,
  requireInternalSecret,
  Runtime,
  Service,
  serviceLifecycle,
} from '@parley/service-kit';
import { Delivery, DeliveryReader, DeliverySettings, withoutStaleNotices } from './delivery';
import { coalescingSends, GatewayClient } from './gateway-client';
import { SessionStore } from './store/session-store';

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
    mayCommit: delivery.mayCommit,
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
