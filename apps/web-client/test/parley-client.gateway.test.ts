import { AddressInfo } from 'node:net';
import WebSocket from 'ws';
import { INTERNAL_SECRET_HEADER, TOPICS } from '@parley/contracts';
import { MemoryBus } from '@parley/kafka';
import {
  createMetricsRegistry,
  createTokenVerifier,
  DEV_JWT_SECRET,
  issueToken,
  loadConfig,
  Readiness,
  silentLogger,
} from '@parley/service-kit';
import { waitFor } from '@parley/test-kit';
import { createWsGateway } from '../../ws-gateway/src/app';
import { gatewaySettings, WsGatewayConfig } from '../../ws-gateway/src/config';
import { ParleyClient } from '../public/parley-client.js';

jest.setTimeout(30_000);

/** The real ws-gateway with its production defaults, on an in-memory bus. */
async function productionGateway() {
  const bus = new MemoryBus();
  const gateway = createWsGateway({
    bus,
    logger: silentLogger(),
    metrics: createMetricsRegistry('ws-gateway', { collectDefaults: false }),
    readiness: new Readiness(),
    verifyToken: createTokenVerifier({ JWT_SECRET: DEV_JWT_SECRET }),
    internalSecret: 'internal-secret-for-tests',
    port: 0,
    internalPort: 0,
    host: '127.0.0.1',
    // What a deployment gets when it sets nothing (RATE_LIMIT_PER_SECOND 20, _BURST 50, _CLOSE_AFTER 20).
    settings: gatewaySettings(loadConfig('ws-gateway', WsGatewayConfig, {}), {
      gatewayId: 'gw-client-test',
      internalUrl: 'http://unused',
    }),
  });
  await gateway.start();
  const port = (gateway.http.server.address() as AddressInfo).port;
  return { bus, gateway, wsUrl: `ws://127.0.0.1:${port}/v1/ws` };
}

describe('parley-client.js against a ws-gateway on its production rate limits (npm start relaxes them)', () => {
  let env: Awaited<ReturnType<typeof productionGateway>>;
  const clients: ParleyClient[] = [];
  afterEach(async () => {
    clients.splice(0).forEach((c) => c.close());
    await env?.gateway.stop();
  });

  function client(user: string) {
    const c = new ParleyClient({
      restUrl: 'http://127.0.0.1:1', // no REST here: sync fails, which does not matter to these tests
      wsUrl: env.wsUrl,
      deviceId: 'phone',
      getToken: () => issueToken(DEV_JWT_SECRET, user),
      WebSocket,
    });
    const events: Array<Record<string, unknown>> = [];
    for (const type of ['rejected', 'status', 'accepted'])
      c.addEventListener(type, (e: Event) => events.push({ ...(e as CustomEvent).detail, event: type }));
    clients.push(c);
    return { c, events };
  }
  /** Refusals the client reported; no REST runs here, so the sync on connect fails and is left out. */
  const refusals = (events: Array<Record<string, unknown>>) =>
    events.filter((e) => e.event === 'rejected' && e.code !== 'sync_failed');
  const inbound = (type: string) =>
    env.bus.events(TOPICS.inbound).filter((e) => (e as { frame: { type: string } }).frame.type === type);

  it('sends every read receipt held while offline after a full outbox: no refusal, no 4029 close', async () => {
    env = await productionGateway();
    const { c, events } = client('alice');
    // Offline: 40 messages written (the outbox), and 60 conversations read (one read per sender).
    for (let i = 0; i < 40; i++) c.send('bob', { text: `m${i}` }, 'direct', `m${i}`);
    for (let i = 0; i < 60; i++) c.read(`peer${i}`, [`peer${i}:x1`]);
    c.start();
    // Under the send budget (15 a second) the 100 frames take a few seconds.
    await waitFor(() => c.outbox.size === 0, 15_000, 'the outbox accepted, reads included');
    expect({
      readsPublished: inbound('read').length,
      rejected: refusals(events).map((e) => e.code),
      connects: events.filter((e) => e.event === 'status' && e.state === 'connecting').length,
    }).toEqual({ readsPublished: 60, rejected: [], connects: 1 });
  });

  it('sends a read receipt for 600 messages of one sender (the frame allows 500 mids)', async () => {
    env = await productionGateway();
    const { c, events } = client('alice');
    c.start();
    await waitFor(() => c.state === 'online', 10_000, 'online');
    const mids = Array.from({ length: 600 }, (_, i) => `bob:m${i}`);
    expect(c.read('bob', mids)).toHaveLength(2); // two frames, each answered accepted
    await waitFor(() => c.outbox.size === 0, 10_000, 'both reads accepted');
    const readMids = inbound('read').flatMap((e) => (e as { frame: { mids: string[] } }).frame.mids);
    expect({
      readMids: new Set(readMids).size,
      rejected: refusals(events).map((e) => e.code),
    }).toEqual({ readMids: 600, rejected: [] });
  });

  it('splits a read of 500 mids of the longest ids into frames under the 64 KiB limit', async () => {
    env = await productionGateway();
    const { c, events } = client('alice');
    c.start();
    await waitFor(() => c.state === 'online', 10_000, 'online');
    const sender = 'b'.repeat(64);
    const mids = Array.from({ length: 500 }, (_, i) => `${sender}:${String(i).padStart(64, 'm')}`);
    expect(c.read(sender, mids).length).toBeGreaterThan(1);
    await waitFor(() => c.outbox.size === 0, 10_000, 'every read accepted');
    const readMids = inbound('read').flatMap((e) => (e as { frame: { mids: string[] } }).frame.mids);
    expect(readMids).toEqual(mids);
    expect(refusals(events)).toEqual([]);
  });

  it('does not lose a read receipt made just after the token expired (close 1008, then reconnect)', async () => {
    env = await productionGateway();
    const c = new ParleyClient({
      restUrl: 'http://127.0.0.1:1',
      wsUrl: env.wsUrl,
      getToken: () => issueToken(DEV_JWT_SECRET, 'alice', 2), // a short-lived token, refreshed per connect
      WebSocket,
    });
    clients.push(c);
    const closes: number[] = [];
    c.start();
    await waitFor(() => c.state === 'online', 10_000, 'online');
    (c.socket as unknown as WebSocket).once('close', (code: number) => closes.push(code));
    await new Promise((resolve) => setTimeout(resolve, 2200)); // the token has expired
    c.read('bob', ['bob:m1']); // the socket is still open: the client sends it now
    await waitFor(() => closes.length === 1 && c.outbox.size === 0, 10_000, 'closed, back, and accepted');
    expect({ closes, readsPublished: inbound('read').length }).toEqual({ closes: [1008], readsPublished: 1 });
  });

  it('acks a burst of 600 deliverables in frames of at most 500 mids (one frame of 600 would be refused)', async () => {
    env = await productionGateway();
    const { c, events } = client('alice');
    c.start();
    await waitFor(() => c.state === 'online', 10_000, 'online');
    const deliveries = Array.from({ length: 600 }, (_, i) => ({
      to: 'alice',
      frame: {
        type: 'message',
        mid: `bob:b${i}`,
        id: `b${i}`,
        from: 'bob',
        to: 'alice',
        chat: 'direct',
        body: i,
        sentAt: 1,
      },
    }));
    const pushed = await env.gateway.internal.inject({
      method: 'POST',
      url: '/send',
      headers: { [INTERNAL_SECRET_HEADER]: 'internal-secret-for-tests' },
      payload: { deliveries },
    });
    expect(pushed.statusCode).toBe(200);
    const ackedMids = () => inbound('ack').flatMap((e) => (e as { frame: { mids: string[] } }).frame.mids);
    await waitFor(() => ackedMids().length === 600, 10_000, 'every delivery acked');
    expect(refusals(events)).toEqual([]);
  });

  /** The client's sockets the gateway holds open now. */
  const openConnections = () =>
    env.bus.events(TOPICS.connections).filter((e) => (e as { kind: string }).kind === 'connection-up')
      .length -
    env.bus.events(TOPICS.connections).filter((e) => (e as { kind: string }).kind === 'connection-down')
      .length;

  it('start() twice (an app resuming) leaves one socket open, not an orphan that never acks', async () => {
    env = await productionGateway();
    const { c } = client('alice');
    c.start();
    c.start();
    await waitFor(() => c.state === 'online', 10_000, 'online');
    await new Promise((resolve) => setTimeout(resolve, 500));
    const open = openConnections;
    const before = open();
    c.close();
    // Waited for, not slept on: a pause of the test process (a busy box) could outlast a fixed wait
    // before the gateway read the close. An orphan socket is never closed, and fails it still.
    await waitFor(() => open() === 0, 5000, 'the connection-downs').catch(() => undefined);
    expect({ openWhileStarted: before, openAfterClose: open() }).toEqual({
      openWhileStarted: 1,
      openAfterClose: 0,
    });
  });

  it.each([
    ['arrives', false],
    ['fails', true],
  ])(
    'close() and start() while the token is on its way (it then %s) leave one socket open, not an orphan',
    async (_, firstFetchFails) => {
      env = await productionGateway();
      let fetches = 0;
      const c = new ParleyClient({
        restUrl: 'http://127.0.0.1:1',
        wsUrl: env.wsUrl,
        // A token fetch that takes a moment, as a real one over the network does.
        getToken: () => {
          const fails = firstFetchFails && ++fetches === 1;
          return new Promise<string>((resolve, reject) =>
            setTimeout(
              () => (fails ? reject(new Error('offline')) : resolve(issueToken(DEV_JWT_SECRET, 'alice'))),
              300,
            ),
          );
        },
        WebSocket,
      });
      clients.push(c);
      c.start();
      c.close(); // the app goes to the background while the first connect waits for its token
      c.start(); // and comes back before that token arrived
      await waitFor(() => c.state === 'online', 10_000, 'online');
      await new Promise((resolve) => setTimeout(resolve, 1500)); // past a reconnect the failure might start
      const whileStarted = openConnections();
      c.close();
      // An orphan is never closed: the wait runs out, and the count says so.
      await waitFor(() => openConnections() === 0, 5000, 'the connection-downs').catch(() => undefined);
      expect({ whileStarted, afterClose: openConnections() }).toEqual({ whileStarted: 1, afterClose: 0 });
    },
  );
});
