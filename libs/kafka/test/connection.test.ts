import net from 'node:net';
import { Kafka, logLevel } from 'kafkajs';
import pino from 'pino';
import { waitFor } from '@parley/test-kit';
import { Broker, createKafkaBus, startBroker } from '../src';

/** A port nothing listens on yet. */
async function freePort(): Promise<number> {
  const server = net.createServer();
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as net.AddressInfo;
  await new Promise<void>((resolve) => server.close(() => resolve()));
  return port;
}

describe('the bus connection', () => {
  let broker: Broker | undefined;
  afterEach(async () => {
    await broker?.stop();
    broker = undefined;
  });

  test('a first connect that failed (Kafka away) is tried again: ping answers once Kafka is back', async () => {
    const port = await freePort();
    const kafka = new Kafka({
      clientId: 'connection-test',
      brokers: [`127.0.0.1:${port}`],
      logLevel: logLevel.NOTHING,
      retry: { initialRetryTime: 50, retries: 1 },
    });
    const bus = createKafkaBus({ kafka, logger: pino({ level: 'silent' }) });
    try {
      await expect(bus.ping()).rejects.toThrow(); // a readiness probe while Kafka is away
      broker = await startBroker({ port, logger: pino({ level: 'silent' }) });
      await waitFor(
        () =>
          bus.ping().then(
            () => true,
            () => false,
          ),
        15_000,
        'ping to answer once Kafka is back',
      );
    } finally {
      await bus.close();
    }
  }, 30_000);
});
