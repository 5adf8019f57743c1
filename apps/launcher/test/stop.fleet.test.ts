import { startFleet } from '../src/fleet';

describe('the fleet stopping', () => {
  it('reports a service that failed to stop, so that npm start exits non-zero', async () => {
    const fleet = await startFleet({ ports: 'random', logLevel: 'silent', fastConsumers: true });
    // persistence-ms's stop fails (a consumer's last commit, a pool that would not end, ...).
    const persistence = fleet.services['persistence-ms']!;
    const stopPersistence = persistence.stop.bind(persistence);
    persistence.stop = async () => {
      await stopPersistence();
      throw new Error('persistence-ms could not stop cleanly');
    };
    // main.ts: `await fleet.stop(); logger.info('stopped'); process.exit(0)`.
    await expect(fleet.stop()).rejects.toThrow('persistence-ms could not stop cleanly');
  });
});
