import { waitFor, WsTestClient } from '@parley/test-kit';
import type { Service } from '@parley/service-kit';
import { buildEmbeddedGateway } from '../src/embedded-gateway';
import { freePort } from '../src/ports';
import { STATE_CLOCK_MARGIN_MS } from '../../session-ms/src/store/session-store';
import { fleetSuite } from './helpers';

describe('fleet: a ws-gateway rollout with clients connected and traffic flowing', () => {
  const { clients, fleet } = fleetSuite({ maxAttempts: 3 });
  const sockets: WsTestClient[] = [];
  afterEach(async () => {
    await Promise.all(sockets.splice(0).map((s) => s.close()));
  });

  /** Another ws-gateway pod on the fleet's Kafka, with an id of its own; its WebSocket URL. */
  const startGateway = async (gatewayId: string): Promise<{ gateway: Service; ws: string }> => {
    const [port, internalPort] = [await freePort(), await freePort()];
    const gateway = await buildEmbeddedGateway({
      host: '127.0.0.1',
      port,
      internalPort,
      kafka: {
        KAFKA_BROKERS: fleet().urls.kafka,
        KAFKA_SSL: false,
        KAFKA_REPLICATION_FACTOR: 1,
        KAFKA_TOPIC_PARTITIONS: 4,
      },
      jwtSecret: fleet().jwtSecret,
      internalSecret: 'parley-dev-internal-secret',
      logLevel: 'warn',
      gatewayId,
    });
    await gateway.start();
    return { gateway, ws: `ws://127.0.0.1:${port}/v1/ws` };
  };
  const connectTo = async (ws: string, user: string) => {
    const socket = await WsTestClient.connect(`${ws}?token=${await clients.token(user)}`);
    sockets.push(socket);
    return socket;
  };
  const announcements = async () => {
    const text = await (await fetch(`http://127.0.0.1:${fleet().ports.sessionMs}/metrics`)).text();
    return Number(/^parley_session_announcements_total(?:\{[^}]*\})? (\d+)$/m.exec(text)?.[1]);
  };

  it("moves a client from a stopping gateway to a new pod mid-conversation: nothing lost, and neither pod (started since session-ms's store began) is asked to announce its sockets again", async () => {
    // The pods start more than STATE_CLOCK_MARGIN_MS after session-ms's store began (one started
    // within it is asked: its clock may run ahead of session-ms's), as in a rollout; the fleet's own
    // gateway, which started within it, may have been asked.
    await new Promise((resolve) => setTimeout(resolve, STATE_CLOCK_MARGIN_MS));
    const askedBefore = await announcements();
    const a = await startGateway('gw-rollout-a');
    let aStopped = false;
    let b: Awaited<ReturnType<typeof startGateway>> | undefined;
    try {
      const alice = await clients.connect('roll-alice', { autoAck: true });
      const onA = await connectTo(a.ws, 'roll-bob');
      alice.send({ type: 'message', id: 'r1', to: 'roll-bob', body: 'before' });
      await onA.next((f) => f.mid === 'roll-alice:r1'); // pushed via A, not acked
      b = await startGateway('gw-rollout-b'); // the new pod
      aStopped = true;
      await a.gateway.stop(); // the old one drains: 1001
      expect(await onA.closed()).toBe(1001);
      alice.send({ type: 'message', id: 'r2', to: 'roll-bob', body: 'between' });
      await alice.next((f) => f.type === 'accepted' && f.id === 'r2');
      const onB = await connectTo(b.ws, 'roll-bob');
      await onB.until(
        () => ['roll-alice:r1', 'roll-alice:r2'].every((mid) => onB.frames.some((f) => f.mid === mid)),
        10_000,
      );
      onB.send({ type: 'ack', mids: ['roll-alice:r1', 'roll-alice:r2'] });
      const delivered = () =>
        new Set(
          alice.ofType('receipt').flatMap((f) => (f.status === 'delivered' ? (f.mids as string[]) : [])),
        );
      await waitFor(() => delivered().size === 2, 10_000, 'delivered receipts for both');
      expect(await announcements()).toBe(askedBefore);
    } finally {
      await Promise.all([aStopped ? undefined : a.gateway.stop(), b?.gateway.stop()]);
    }
  });
});
