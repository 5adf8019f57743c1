import { randomBytes } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { waitFor, WsTestClient } from '@parley/test-kit';
import { APPS, ProcessFleet } from '../src/process-fleet';

const POSTGRES_URL = process.env.TEST_DATABASE_URL ?? 'postgres://postgres@127.0.0.1:5432/test';

interface TraceLine {
  service: string;
  hop: string;
  topic?: string;
  kind?: string;
  mids?: string[];
}

/**
 * TRACE_USERS as an operator uses it: set on every service (here at LOG_LEVEL warn), a message to or
 * from a traced user can be followed by its mid through every service's log, and nobody else's
 * messages are logged.
 */
describe('message tracing (TRACE_USERS), the fleet as separate processes', () => {
  const run = randomBytes(3).toString('hex');
  const [alice, bob, carol, dave] = ['alice', 'bob', 'carol', 'dave'].map((name) => `tr-${name}-${run}`);
  let fleet: ProcessFleet;
  const clients: WsTestClient[] = [];

  beforeAll(async () => {
    fleet = await ProcessFleet.start({
      postgresUrl: POSTGRES_URL,
      env: Object.fromEntries(APPS.map((app) => [app, { TRACE_USERS: alice }])),
    });
  }, 120_000);
  afterAll(async () => {
    await Promise.all(clients.map((c) => c.close()));
    await fleet?.stop();
  }, 60_000);

  const connect = async (user: string) => {
    const client = await WsTestClient.connect(`${fleet.urls.ws}?token=${await fleet.token(user)}`);
    clients.push(client);
    return client;
  };

  /** The trace lines of every service's log (this run's: its users are new), read now. */
  const traceLines = (): TraceLine[] =>
    APPS.flatMap((app) =>
      readFileSync(fleet.parts[app].spec.logFile, 'utf8')
        .split('\n')
        .filter((line) => line.includes('"trace":true') && line.includes(run))
        .map((line) => JSON.parse(line) as TraceLine),
    );
  const hopsOf = (mid: string) =>
    traceLines()
      .filter((line) => line.mids?.includes(mid))
      .map((line) => [line.service, line.hop, line.topic, line.kind].filter(Boolean).join(' '));

  it("logs every hop of a traced user's messages, sent and received, and nothing of others'", async () => {
    const [a, b, c] = [await connect(alice), await connect(bob), await connect(carol)];
    a.send({ type: 'message', id: 't1', to: bob, body: 'traced' });
    const message = await b.next((f) => f.type === 'message', 10_000);
    b.send({ type: 'ack', mids: [message.mid] });
    const receipt = await a.next((f) => f.type === 'receipt', 10_000);
    a.send({ type: 'ack', mids: [receipt.mid] });
    b.send({ type: 'message', id: 'u1', to: carol, body: 'not traced' });
    const untraced = await c.next((f) => f.type === 'message', 10_000);
    c.send({ type: 'ack', mids: [untraced.mid] });
    a.send({ type: 'message', id: 't2', to: dave, body: 'dave is offline' });

    const offline = `${alice}:t2`;
    await waitFor(async () => hopsOf(offline).includes('push-ms push'), 20_000, "the offline message's push");
    expect(new Set(hopsOf(`${alice}:t1`))).toEqual(
      new Set([
        // alice's message, then bob's ack of it
        'ws-gateway published parley.inbound.v1 inbound',
        'message-router consumed parley.inbound.v1 inbound',
        'message-router published parley.delivery.v1 deliver',
        'session-ms consumed parley.delivery.v1 deliver',
        'ws-gateway written',
        'message-router published parley.delivery.v1 ack',
        'session-ms consumed parley.delivery.v1 ack',
        // the delivered receipt to alice names the mid it is for
        'session-ms published parley.delivery.v1 deliver',
      ]),
    );
    expect(hopsOf(receipt.mid as string)).toEqual(
      expect.arrayContaining(['session-ms consumed parley.delivery.v1 deliver', 'ws-gateway written']),
    );
    expect(new Set(hopsOf(offline))).toEqual(
      new Set([
        'ws-gateway published parley.inbound.v1 inbound',
        'message-router consumed parley.inbound.v1 inbound',
        'message-router published parley.delivery.v1 deliver',
        'session-ms consumed parley.delivery.v1 deliver',
        'session-ms published parley.offline.v1 offline',
        'persistence-ms consumed parley.offline.v1 offline',
        'push-ms consumed parley.offline.v1 offline',
        'push-ms push',
      ]),
    );
    expect(hopsOf(`${bob}:u1`)).toEqual([]);
    expect(traceLines().filter((line) => JSON.stringify(line).includes(carol))).toEqual([]);
  }, 60_000);
});
