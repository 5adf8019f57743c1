import { createLogPushProvider } from '../src/log-provider';
import { capturedLogger } from './captured-logger';

const notification = (n: number) => ({
  title: 'alice',
  body: `${n} new messages from alice`,
  data: { kind: 'parley.messages', count: String(n) },
  collapseId: `alice:${n}`,
});

describe('the log push provider', () => {
  it('records and logs what it would send, and reports every token as sent', async () => {
    const { logger, lines } = capturedLogger();
    const provider = createLogPushProvider(logger);
    const before = Date.now();
    expect(await provider.send(['tok-a', 'tok-b'], notification(2))).toEqual(['sent', 'sent']);
    expect(provider.recorded).toEqual([
      { tokens: ['tok-a', 'tok-b'], notification: notification(2), at: expect.any(Number) },
    ]);
    expect(provider.recorded[0].at).toBeGreaterThanOrEqual(before);
    expect(lines).toEqual([
      expect.objectContaining({
        level: 30,
        msg: 'push (log provider)',
        push: {
          devices: 2,
          title: 'alice',
          body: '2 new messages from alice',
          data: notification(2).data,
          collapseId: 'alice:2',
        },
      }),
    ]);
    await provider.close();
  });

  it('logs how many devices, never their tokens', async () => {
    const { logger, lines } = capturedLogger();
    await createLogPushProvider(logger).send(['secret-fcm-token'], notification(1));
    expect(lines).toHaveLength(1);
    expect(JSON.stringify(lines)).not.toContain('secret-fcm-token');
  });

  it('keeps only the most recent pushes, oldest first', async () => {
    const { logger, lines } = capturedLogger();
    const provider = createLogPushProvider(logger, 2);
    for (const n of [1, 2, 3]) await provider.send([`tok-${n}`], notification(n));
    expect(provider.recorded.map((r) => r.tokens)).toEqual([['tok-2'], ['tok-3']]);
    expect(lines.map((l) => (l.push as { body: string }).body)).toEqual([
      '1 new messages from alice',
      '2 new messages from alice',
      '3 new messages from alice',
    ]);
  });
});
