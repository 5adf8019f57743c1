import { setTimeout as sleep } from 'node:timers/promises';
import { withDeadline } from '../src/deadline';

describe('withDeadline', () => {
  it('answers what the work answers, or fails as it fails, when it ends in time', async () => {
    expect(await withDeadline(Promise.resolve(42), 1000, () => new Error('late'))).toBe(42);
    await expect(
      withDeadline(Promise.reject(new Error('refused')), 1000, () => new Error('late')),
    ).rejects.toThrow('refused');
  });

  it("fails with the late error once the time is up, and the abandoned work's later failure is nobody's", async () => {
    const unhandled: unknown[] = [];
    const onUnhandled = (reason: unknown) => unhandled.push(reason);
    process.on('unhandledRejection', onUnhandled);
    try {
      const slow = sleep(100).then(() => {
        throw new Error('failed after the deadline');
      });
      const started = Date.now();
      await expect(withDeadline(slow, 20, () => new Error('took longer than 20 ms'))).rejects.toThrow(
        'took longer than 20 ms',
      );
      expect(Date.now() - started).toBeLessThan(100);
      await sleep(150);
      expect(unhandled).toEqual([]);
    } finally {
      process.off('unhandledRejection', onUnhandled);
    }
  });
});
