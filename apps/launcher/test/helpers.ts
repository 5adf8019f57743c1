import { issueToken } from '@parley/service-kit';
import { WsTestClient } from '@parley/test-kit';
import { startFleet, type Fleet, type FleetOptions } from '../src/fleet';

/**
 * The suite's fleet, started in-process before its tests (random ports, quick consumers, a 1 s ack
 * timeout: an ack's way back slowed past a shorter one by a busy box would be taken for a defect),
 * stopped after them; its clients are closed after each test.
 */
export function fleetSuite(options: Partial<FleetOptions> = {}) {
  let fleet: Fleet | undefined;
  const running = () => fleet ?? fail('the fleet is not started yet');
  const clients = clientsOf(running);
  beforeAll(async () => {
    fleet = await startFleet({
      ports: 'random',
      logLevel: 'warn',
      ackTimeoutMs: 1000,
      fastConsumers: true,
      ...options,
    });
  }, 60_000);
  afterEach(() => clients.closeAll());
  afterAll(() => fleet?.stop(), 30_000);
  return { clients, fleet: running };
}

function fail(message: string): never {
  throw new Error(message);
}

/** Real clients of a running fleet (or of the one a suite will have started): WebSocket devices and REST calls as a user. */
export function clientsOf(fleetOrLater: Fleet | (() => Fleet)) {
  const open: WsTestClient[] = [];
  const running = typeof fleetOrLater === 'function' ? fleetOrLater : () => fleetOrLater;
  const token = (user: string) => issueToken(running().jwtSecret, user);
  return {
    token,
    async connect(user: string, options: { deviceId?: string; autoAck?: boolean } = {}) {
      const query = options.deviceId ? `&deviceId=${options.deviceId}` : '';
      const client = await WsTestClient.connect(`${running().urls.ws}?token=${await token(user)}${query}`, {
        autoAck: options.autoAck,
      });
      open.push(client);
      return client;
    },
    async rest(user: string, method: string, path: string, body?: unknown) {
      const response = await fetch(`${running().urls.rest}${path}`, {
        method,
        headers: {
          authorization: `Bearer ${await token(user)}`,
          ...(body === undefined ? {} : { 'content-type': 'application/json' }),
        },
        body: body === undefined ? undefined : JSON.stringify(body),
      });
      const text = await response.text();
      return {
        status: response.status,
        body: text ? JSON.parse(text) : undefined,
        headers: response.headers,
      };
    },
    async closeAll() {
      await Promise.all(open.splice(0).map((c) => c.close()));
    },
  };
}
