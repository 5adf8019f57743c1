import WebSocket from 'ws';
import { waitFor } from '@parley/test-kit';
import { startFleet, Fleet } from '../../launcher/src/fleet';
// The browser module itself, run in Node with the `ws` WebSocket: no browser needed for these.
import { devToken, ParleyClient } from '../public/parley-client.js';

type Frame = Record<string, unknown> & { event: string; mid?: string };

jest.setTimeout(30_000);

describe('parley-client.js (the reference client) against the fleet', () => {
  let fleet: Fleet;
  const clients: ParleyClient[] = [];

  beforeAll(async () => {
    fleet = await startFleet({
      ports: 'random',
      logLevel: 'warn',
      ackTimeoutMs: 1000,
      maxAttempts: 2,
      fastConsumers: true,
    });
  }, 60_000);
  afterEach(() => clients.splice(0).forEach((c) => c.close()));
  afterAll(() => fleet.stop());

  function client(user: string) {
    const c = new ParleyClient({
      restUrl: fleet.urls.rest,
      wsUrl: fleet.urls.ws,
      deviceId: `node-${user}`,
      getToken: () => devToken(fleet.urls.rest, user),
      WebSocket,
    });
    const seen: Frame[] = [];
    for (const type of ['message', 'receipt', 'group', 'accepted', 'rejected', 'status']) {
      c.addEventListener(type, (event: Event) =>
        seen.push({ ...(event as CustomEvent).detail, event: type }),
      );
    }
    clients.push(c);
    return { c, seen, of: (type: string) => seen.filter((f) => f.event === type) };
  }

  it('keeps a message sent while offline in the outbox and sends it once connected', async () => {
    const alice = client('pc-alice1');
    const { id } = alice.c.send('pc-bob1', { text: 'queued' });
    expect(alice.c.outbox.size).toBe(1);
    alice.c.start();
    await waitFor(() => alice.of('accepted').length === 1, 10_000, 'accepted');
    expect(alice.of('accepted')[0]).toMatchObject({ id, mid: `pc-alice1:${id}` });
    expect(alice.c.outbox.size).toBe(0);
  });

  it('catches up through GET /v1/messages, hands each mid over once, and acks over REST while offline', async () => {
    const alice = client('pc-alice2');
    alice.c.start();
    await waitFor(() => alice.c.state === 'online', 10_000, 'online');
    alice.c.send('pc-carol2', { text: 'one' }, 'direct', 'm1');
    alice.c.send('pc-carol2', { text: 'two' }, 'direct', 'm2');
    await waitFor(() => alice.of('accepted').length === 2, 10_000, 'accepted');

    const carol = client('pc-carol2'); // never connects its socket
    let fresh = 0;
    await waitFor(async () => (fresh += await carol.c.sync()) === 2, 10_000, 'both messages in sync');
    expect(carol.of('message').map((f) => f.mid)).toEqual(['pc-alice2:m1', 'pc-alice2:m2']);
    expect(await carol.c.sync()).toBe(0); // nothing new: acked (or, until the ack lands, deduped)
    expect(carol.of('message')).toHaveLength(2);
    await waitFor(
      async () => {
        const response = await fetch(`${fleet.urls.rest}/v1/messages`, {
          headers: { authorization: `Bearer ${await devToken(fleet.urls.rest, 'pc-carol2')}` },
        });
        return ((await response.json()) as { messages: unknown[] }).messages.length === 0;
      },
      10_000,
      'the REST acks to empty the offline store',
    );
    // The acks completed delivery: the sender gets its receipts. A sync that found only m1 at first
    // acks m1, then m1 and m2: receipts may name a mid twice, so count distinct mids.
    await waitFor(
      () => new Set(alice.of('receipt').flatMap((f) => f.mids as string[])).size === 2,
      10_000,
      'delivered receipts',
    );
  });

  it('reconnects after the socket drops and acks what it receives', async () => {
    const alice = client('pc-alice3');
    const bob = client('pc-bob3');
    alice.c.start();
    bob.c.start();
    await waitFor(() => alice.c.state === 'online' && bob.c.state === 'online', 10_000, 'online');
    bob.c.socket?.close(4000);
    await waitFor(
      () => bob.of('status').filter((f) => f.state === 'online').length === 2,
      10_000,
      'reconnected',
    );
    alice.c.send('pc-bob3', { text: 'after the drop' }, 'direct', 'r1');
    await waitFor(() => bob.of('message').length === 1, 10_000, 'the message');
    await waitFor(() => alice.of('receipt').some((f) => f.status === 'delivered'), 10_000, 'delivered');
  });
});
