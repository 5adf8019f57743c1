import net from 'node:net';
import { randomPorts, startFleet } from '../src/fleet';

describe('the fleet starting on random ports', () => {
  it('starts again on ports drawn again when one drawn was taken before it listened (another fleet beside it)', async () => {
    const taken = net.createServer();
    await new Promise<void>((resolve) => taken.listen(0, '127.0.0.1', resolve));
    const takenPort = (taken.address() as net.AddressInfo).port;
    let draws = 0;
    // The first draw hands the broker (the first to listen) a port another listener holds.
    const drawPorts = async () => ({
      ...(await randomPorts()),
      ...(draws++ === 0 ? { broker: takenPort } : {}),
    });
    try {
      const fleet = await startFleet({ ports: 'random', drawPorts, logLevel: 'silent', fastConsumers: true });
      await fleet.stop();
      expect(draws).toBe(2);
      expect(fleet.ports.broker).not.toBe(takenPort);
    } finally {
      taken.close();
    }
  }, 120_000);
});
