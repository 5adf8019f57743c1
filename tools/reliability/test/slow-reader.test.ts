import { issueToken } from '@parley/service-kit';
import { waitFor, WsTestClient } from '@parley/test-kit';
import { startFleet, Fleet } from '../../../apps/launcher/src/fleet';
import { clientsOf } from '../../../apps/launcher/test/helpers';
import { metricValue } from '../../bench/src/stats';

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

  const gatewayMetric = async (name: string) => {
    const text = await (await fetch(`http://127.0.0.1:${fleet.ports.wsGatewayInternal}/metrics`)).text();
    return metricValue(text, name) ?? NaN;
  };
  const openConnections = () => gatewayMetric('parley_ws_connections');
  /**
   * The gateway thread's heap and the buffers it holds, after a full collection on that thread
   * (`npm test` runs Node with --expose-gc, which its threads share).
   */
  const gatewayMemoryAfterGc = async () => {
    for (let i = 0; i < 2; i++) {
      fleet.collectGarbage(); // asynchronous: the thread runs it when it gets the message
      await new Promise((resolve) => setTimeout(resolve, 250));
    }
    return (
      (await gatewayMetric('parley_nodejs_heap_size_used_bytes')) +
      (await gatewayMetric('parley_nodejs_external_memory_bytes'))
    );
  };

  it('cuts off a socket that stops reading once its unsent bytes pass the cap', async () => {
    const stuck = await WsTestClient.connect(
      `${fleet.urls.ws}?token=${await issueToken(fleet.jwtSecret, 'slow-reader')}`,
    );
    const sender = await clients.connect('slow-sender', { autoAck: true });
    expect(await openConnections()).toBe(2);
    (stuck.socket as unknown as { _socket: { pause(): void } })._socket.pause(); // never read again

    const memoryBefore = await gatewayMemoryAfterGc();
    const body = 'x'.repeat(60 * 1024);
    for (let i = 0; i < 600; i++) {
      sender.send({ type: 'message', id: `big${i}`, to: 'slow-reader', body });
      if (i % 100 === 99) await new Promise((r) => setTimeout(r, 550));
    }
    await waitFor(async () => (await openConnections()) === 1, 30_000, 'the stuck socket to be cut off');
    // 600 x 60 KiB = 36 MiB were sent at the reader; the gateway holds at most its 4 MiB cap of them.
    // Measured 0.75-1.2 MiB of growth with the cap, but 46 MiB once in a full run beside two other
    // test runs, likely the records behind the cut-off still passing through the gateway. So the
    // growth is read again until it settles; a socket's bytes kept after its close never would.
    const growthMiB = async () => ((await gatewayMemoryAfterGc()) - memoryBefore) / 1024 / 1024;
    let growth = await growthMiB();
    for (const deadline = Date.now() + 20_000; growth >= 16 && Date.now() < deadline;)
      growth = await growthMiB();
    expect(growth).toBeLessThan(16);
    sender.send({ type: 'ping' });
    expect(await sender.next((f) => f.type === 'pong')).toEqual({ type: 'pong' });
  }, 90_000);
});
