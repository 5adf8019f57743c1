import { issueToken } from '@parley/service-kit';
import { waitFor, WsTestClient } from '@parley/test-kit';
import { startFleet, Fleet } from '../../../apps/launcher/src/fleet';
import { clientsOf } from '../../../apps/launcher/test/helpers';

/** Live heap after a full collection (`npm test` runs Node with --expose-gc; without it this fails). */
function heapAfterGc(): number {
  (globalThis as { gc?: () => void }).gc!();
  return process.memoryUsage().heapUsed;
}

/** A reader that never reads must be cut off, and the gateway's memory must stay bounded. */
describe('slow reader', () => {
  let fleet: Fleet;
  let clients: ReturnType<typeof clientsOf>;

  beforeAll(async () => {
    fleet = await startFleet({ ports: 'random', logLevel: 'error', fastConsumers: true });
    clients = clientsOf(fleet);
  }, 60_000);
  afterAll(async () => {
    await clients.closeAll();
    await fleet.stop();
  }, 30_000);

  const openConnections = async () => {
    const text = await (await fetch(`http://127.0.0.1:${fleet.ports.wsGatewayInternal}/metrics`)).text();
    return Number(/^parley_ws_connections\{[^}]*\} (\d+)/m.exec(text)?.[1]);
  };

  it('cuts off a socket that stops reading once its unsent bytes pass the cap', async () => {
    const stuck = await WsTestClient.connect(
      `${fleet.urls.ws}?token=${await issueToken(fleet.jwtSecret, 'slow-reader')}`,
    );
    const sender = await clients.connect('slow-sender', { autoAck: true });
    expect(await openConnections()).toBe(2);
    (stuck.socket as unknown as { _socket: { pause(): void } })._socket.pause(); // never read again

    const heapBefore = heapAfterGc();
    const body = 'x'.repeat(60 * 1024);
    for (let i = 0; i < 600; i++) {
      sender.send({ type: 'message', id: `big${i}`, to: 'slow-reader', body });
      if (i % 100 === 99) await new Promise((r) => setTimeout(r, 550));
    }
    await waitFor(async () => (await openConnections()) === 1, 30_000, 'the stuck socket to be cut off');
    const heapGrowthMiB = (heapAfterGc() - heapBefore) / 1024 / 1024;
    // 600 x 60 KiB = 36 MiB were sent at the reader; the gateway holds at most its 4 MiB cap of them.
    // The whole in-process fleet shares this heap: measured 9-17 MiB of growth with the cap, and
    // 80-84 MiB with the cap raised to 1 GiB (the gateway buffering everything).
    expect(heapGrowthMiB).toBeLessThan(40);
    sender.send({ type: 'ping' });
    expect(await sender.next((f) => f.type === 'pong')).toEqual({ type: 'pong' });
  }, 60_000);
});
