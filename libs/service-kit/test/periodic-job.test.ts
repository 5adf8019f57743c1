import { setTimeout as sleep } from 'node:timers/promises';
import { createPeriodicJob } from '../src/periodic-job';
import { silentLogger } from '../src/logger';

describe('createPeriodicJob', () => {
  it('runs at start, then an interval after each run ends, never two at once', async () => {
    let runs = 0;
    let active = 0;
    let mostAtOnce = 0;
    const job = createPeriodicJob({
      name: 'test',
      intervalMs: 10,
      logger: silentLogger(),
      run: async () => {
        runs++;
        active++;
        mostAtOnce = Math.max(mostAtOnce, active);
        await sleep(30); // longer than the interval
        active--;
        return runs;
      },
    });
    job.start();
    expect(runs).toBe(1);
    await sleep(200);
    await job.stop();
    expect(runs).toBeGreaterThanOrEqual(2);
    expect(mostAtOnce).toBe(1);
    const after = runs;
    await sleep(60);
    expect(runs).toBe(after); // stopped: no more runs
  });

  it('logs a failed run and tries again at the next interval', async () => {
    const warnings: unknown[] = [];
    const logger = silentLogger();
    logger.warn = ((fields: unknown) => void warnings.push(fields)) as typeof logger.warn;
    let runs = 0;
    const job = createPeriodicJob({
      name: 'flaky',
      intervalMs: 5,
      logger,
      run: async () => {
        runs++;
        if (runs === 1) throw new Error('database away');
        return runs;
      },
    });
    job.start();
    await sleep(40);
    await job.stop();
    expect(runs).toBeGreaterThanOrEqual(2);
    expect(warnings).toEqual([expect.objectContaining({ job: 'flaky', err: expect.any(Error) })]);
  });

  // The group-ms outbox logged a warning every 5 s while Postgres was away, and nothing when it
  // came back: the log left the outage open.
  it('logs the first run that succeeds after failed ones, once', async () => {
    const infos: unknown[] = [];
    const logger = silentLogger();
    logger.info = ((fields: unknown) => void infos.push(fields)) as typeof logger.info;
    let runs = 0;
    const job = createPeriodicJob({
      name: 'outbox',
      intervalMs: 5,
      logger,
      run: async () => {
        runs++;
        if (runs <= 2) throw new Error('database away');
        return runs;
      },
    });
    job.start();
    await sleep(60);
    await job.stop();
    expect(runs).toBeGreaterThanOrEqual(4);
    expect(infos).toEqual([{ job: 'outbox', failedRuns: 2 }]);
  });

  it('stop waits for the run in progress; runOnce returns the result', async () => {
    let finished = false;
    const job = createPeriodicJob({
      name: 'slow',
      intervalMs: 1000,
      logger: silentLogger(),
      run: async () => {
        await sleep(30);
        finished = true;
        return 'done';
      },
    });
    job.start();
    await job.stop();
    expect(finished).toBe(true);
    expect(await job.runOnce()).toBe('done');
  });

  it('stop asks a long run to end early through its signal, instead of waiting it out', async () => {
    let batches = 0;
    const job = createPeriodicJob({
      name: 'purge',
      intervalMs: 1000,
      logger: silentLogger(),
      run: async (signal) => {
        while (!signal.aborted && batches < 1000) {
          batches++;
          await sleep(5); // a batch of deletes
        }
        return batches;
      },
    });
    job.start();
    await sleep(30);
    const stoppedAt = Date.now();
    await job.stop();
    // Waited out, the run would take its 1000 batches of 5 ms: 5 s at least. 2 s leaves room for a
    // pause of the test process (a busy box) during the stop.
    expect(Date.now() - stoppedAt).toBeLessThan(2000);
    expect(batches).toBeLessThan(100);
    expect(await job.runOnce()).toBe(1000); // a run asked for now is not a stopped one
  });
});
