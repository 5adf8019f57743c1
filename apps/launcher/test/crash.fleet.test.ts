import { randomUUID } from 'node:crypto';
import { waitFor } from '@parley/test-kit';
import { startFleet, Fleet } from '../src/fleet';
import { freePort } from '../src/ports';
import { clientsOf } from './helpers';
import { ServiceProcess } from './process';

const REDIS_URL = process.env.TEST_REDIS_URL ?? 'redis://127.0.0.1:6379';
const MESSAGES = 2000;
const SENDERS = 4;

/** Each victim runs as its own OS process next to the in-process fleet, so it can be SIGKILLed. */
const victims: Array<{ app: string; env: Record<string, string> }> = [
  {
    app: 'session-ms',
    env: {
      REDIS_URL,
      REDIS_KEY_PREFIX: `test:${randomUUID()}:`,
      INTERNAL_SECRET: 'parley-dev-internal-secret',
      ACK_TIMEOUT_MS: '1000',
      MAX_ATTEMPTS: '20',
    },
  },
  { app: 'message-router', env: {} },
];

describe.each(victims)('fleet: $app killed with 2,000 messages in flight', ({ app, env }) => {
  let fleet: Fleet;
  let victim: ServiceProcess;
  let clients: ReturnType<typeof clientsOf>;

  beforeAll(async () => {
    fleet = await startFleet({ ports: 'random', logLevel: 'warn', without: [app], fastConsumers: true, ackTimeoutMs: 1000, maxAttempts: 20 });
    clients = clientsOf(fleet);
    const port = await freePort();
    victim = new ServiceProcess(
      app,
      {
        KAFKA_BROKERS: fleet.urls.kafka,
        PORT: String(port),
        HOST: '127.0.0.1',
        KAFKA_SESSION_TIMEOUT_MS: '3000',
        KAFKA_HEARTBEAT_INTERVAL_MS: '300',
        ...env,
      },
      `http://127.0.0.1:${port}`,
    );
    await victim.start();
  }, 60_000);

  afterAll(async () => {
    await clients.closeAll();
    await victim.stop();
    await fleet.stop();
  }, 60_000);

  it('delivers every message after a restart, none under two different mids', async () => {
    const bob = await clients.connect(`crash-bob-${app}`, { autoAck: true });
    const senders = await Promise.all(Array.from({ length: SENDERS }, (_, i) => clients.connect(`crash-sender${i}-${app}`, { autoAck: true })));
    const expected = new Set<string>();
    for (let n = 0; n < MESSAGES; n++) {
      const sender = n % SENDERS;
      senders[sender].send({ type: 'message', id: `m${n}`, to: `crash-bob-${app}`, body: { n } });
      expected.add(`crash-sender${sender}-${app}:m${n}`);
      if (n % 200 === 199) await new Promise((r) => setTimeout(r, 400)); // within the per-connection rate limit
      if (n === 600) {
        await bob.until(() => bob.ofType('message').length >= 100, 20_000);
        await victim.kill();
      }
    }
    await Promise.all(senders.map((s) => s.until(() => s.ofType('accepted').length + s.ofType('error').length >= MESSAGES / SENDERS, 30_000)));
    const accepted = senders.flatMap((s) => s.ofType('accepted').map((f) => f.mid as string));
    expect(senders.flatMap((s) => s.ofType('error'))).toEqual([]);
    expect(accepted).toHaveLength(MESSAGES);
    const restartedAt = Date.now();
    await victim.start();

    const received = () => new Set(bob.ofType('message').map((f) => f.mid as string));
    await waitFor(() => received().size === MESSAGES, 60_000, 'every message at bob').catch(() => undefined);
    console.log(`${app} crash: ${received().size}/${MESSAGES} delivered, ${Date.now() - restartedAt} ms from restart to the last one`);
    const missing = [...expected].filter((mid) => !received().has(mid));
    expect({ received: received().size, missing: missing.slice(0, 5), bobClosed: bob.closeCode }).toEqual({ received: MESSAGES, missing: [], bobClosed: undefined });
    expect(received()).toEqual(expected);
    // One send, one mid: every copy bob saw of a client id carries the mid of that send.
    for (const frame of bob.ofType('message')) {
      expect(frame.mid).toBe(`${frame.from}:${frame.id}`);
    }
  }, 120_000);
});
