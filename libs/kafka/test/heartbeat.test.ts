import type { EachBatchPayload } from 'kafkajs';
import pino from 'pino';
import { sleep } from '../src/retry';
import { whileBeating } from '../src/consumer/heartbeat';

describe('whileBeating', () => {
  const payload = {} as EachBatchPayload;
  const logger = pino({ level: 'silent' });

  it('beats while the handler runs, one beat at a time when the broker answers slower than the interval', async () => {
    let running = 0;
    let most = 0;
    let beats = 0;
    const slowBeat = async () => {
      beats++;
      most = Math.max(most, ++running);
      await sleep(60); // the broker takes six intervals to answer
      running--;
    };
    const result = await whileBeating(
      payload,
      { beat: slowBeat, intervalMs: 10, maxHandlerMs: 60_000, logger },
      () => sleep(600).then(() => 'handled'),
    );
    expect(result).toBe('handled');
    expect(beats).toBeGreaterThanOrEqual(2); // about eight, fewer on a loaded machine
    expect(most).toBe(1);
  });

  it('stops beating once the handler has run past maxHandlerMs', async () => {
    let beats = 0;
    const beat = async () => void beats++;
    await whileBeating(payload, { beat, intervalMs: 10, maxHandlerMs: 50, logger }, () => sleep(300));
    // Ticks at 10-40 ms at most (fewer where the machine is loaded), none after 50 ms: about 30 without the cut-off.
    expect(beats).toBeLessThanOrEqual(5);
  });
});
