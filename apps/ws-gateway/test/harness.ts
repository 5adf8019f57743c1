/** The ws-gateway on an in-memory bus, for the tests and the fixtures that run one in their own process. */
import { AddressInfo } from 'node:net';
import { MemoryBus } from '@parley/kafka';
import {
  createMetricsRegistry,
  createTokenVerifier,
  DEV_JWT_SECRET,
  issueToken,
  Readiness,
  silentLogger,
  TokenVerifier,
} from '@parley/service-kit';
import { createWsGateway } from '../src/app';
import { WsGatewaySettings } from '../src/config';

export const SECRET = 'internal-secret-for-tests';

export const TEST_SETTINGS: WsGatewaySettings = {
  gatewayId: 'gw-test',
  internalUrl: 'http://unused',
  maxFrameBytes: 64 * 1024,
  ratePerSecond: 1000,
  rateBurst: 1000,
  rateCloseAfter: 3,
  maxUnsentBytes: 1024 * 1024,
  maxConnections: 100,
  pingIntervalMs: 60_000,
  heartbeatIntervalMs: 60_000,
  allowedOrigins: [],
};

export async function startGateway(
  overrides: Partial<WsGatewaySettings> = {},
  verifyToken: TokenVerifier = createTokenVerifier({ JWT_SECRET: DEV_JWT_SECRET }),
) {
  const bus = new MemoryBus();
  // Kafka away (a blip) for publishes that hold an event of a kind in `refusing`.
  const refusing = new Set<string>();
  bus.refusePublish = (events) => events.some((e) => refusing.has((e as { kind?: string }).kind ?? ''));
  const gateway = createWsGateway({
    bus,
    logger: silentLogger(),
    metrics: createMetricsRegistry('ws-gateway', { collectDefaults: false }),
    readiness: new Readiness(),
    verifyToken,
    internalSecret: SECRET,
    port: 0,
    internalPort: 0,
    host: '127.0.0.1',
    settings: { ...TEST_SETTINGS, ...overrides },
  });
  await gateway.start();
  const port = (gateway.http.server.address() as AddressInfo).port;
  const url = (user: string, query = '') =>
    issueToken(DEV_JWT_SECRET, user).then((token) => `ws://127.0.0.1:${port}/v1/ws?token=${token}${query}`);
  return { bus, refusing, gateway, port, url };
}
