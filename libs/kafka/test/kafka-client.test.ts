import { createServer } from 'node:net';
import pino from 'pino';
import { waitFor } from '@parley/test-kit';
import { Broker, startBroker } from '../src/broker';
import { createKafkaClient, KafkaReachability } from '../src/kafka-client';

const freePort = () =>
  new Promise<number>((resolve) => {
    const server = createServer().listen(0, '127.0.0.1', () => {
      const { port } = server.address() as { port: number };
      server.close(() => resolve(port));
    });
  });

// Kafka away logged two lines at ERROR per kafkajs retry, per client (and again after every consumer
// restart): 58 to 103 lines per service in 45 s with the broker stopped, and nothing when it came back.
describe('createKafkaClient logs a Kafka outage', () => {
  let broker: Broker | undefined;
  afterEach(async () => {
    await broker?.stop();
    broker = undefined;
  });

  it('once as a warning while kafkajs retries, and once at info when a broker answers again', async () => {
    const port = await freePort();
    const lines: Array<{ level: number; msg: string; [key: string]: unknown }> = [];
    const logger = pino({ level: 'info' }, { write: (line: string) => void lines.push(JSON.parse(line)) });
    const reachability = new KafkaReachability(logger, `127.0.0.1:${port}`);
    const kafka = createKafkaClient(
      'outage',
      { KAFKA_BROKERS: `127.0.0.1:${port}`, KAFKA_SSL: false, KAFKA_REPLICATION_FACTOR: 1 },
      logger,
      reachability,
    );
    const admin = kafka.admin();
    const connected = admin.connect();
    await new Promise((resolve) => setTimeout(resolve, 2500)); // kafkajs retries 4-5 times meanwhile
    expect(lines.map((l) => [l.level, l.msg])).toEqual([
      [40, 'kafka unreachable; retrying (each retry is logged at debug until a broker answers)'],
    ]);
    expect(lines[0]).toMatchObject({
      brokers: `127.0.0.1:${port}`,
      error: expect.stringMatching(/ECONNREFUSED/),
    });
    // What a readiness check that times out meanwhile says (not only "timed out after 2000 ms").
    expect(reachability.outage()).toMatch(/^kafka unreachable for [23] s \(.*ECONNREFUSED/);

    broker = await startBroker({ port, logger: pino({ level: 'silent' }) });
    await connected;
    await waitFor(() => lines.length === 2, 10_000, 'the recovery line');
    expect(lines[1]).toMatchObject({ level: 30, msg: 'kafka reachable again', brokers: `127.0.0.1:${port}` });
    expect(lines[1]!.unreachableForMs).toBeGreaterThanOrEqual(2500);
    expect(reachability.outage()).toBeUndefined();
    await admin.disconnect();
  }, 30_000);
});
