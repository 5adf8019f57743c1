import type { Logger } from 'pino';

export interface PeriodicJob<R> {
  start(): void;
  /** Stops the schedule, asks a run in progress to stop (its signal aborts), and waits for it. */
  stop(): Promise<void>;
  /** Runs the job now (as the schedule does), and returns its result. */
  runOnce(): Promise<R>;
}

export interface PeriodicJobOptions<R> {
  /** Named in the log line of a failed run. */
  name: string;
  intervalMs: number;
  logger: Logger;
  /** `signal` aborts when the job is stopped: a long run (a large purge) should end early then. */
  run: (signal: AbortSignal) => Promise<R>;
}

/**
 * Runs `run` once at start and then `intervalMs` after each run ends, so runs never overlap. A
 * failed run is logged and tried again at the next interval; the first run to succeed after failures
 * is logged too.
 */
export function createPeriodicJob<R>(options: PeriodicJobOptions<R>): PeriodicJob<R> {
  let timer: NodeJS.Timeout | undefined;
  let running: Promise<unknown> = Promise.resolve();
  let stopped = true;
  let stopping = new AbortController();

  /** Runs failed in a row: the first run that succeeds after them says so. */
  let failures = 0;
  const tick = () => {
    running = options
      .run(stopping.signal)
      .then(
        () => {
          if (failures > 0)
            options.logger.info({ job: options.name, failedRuns: failures }, 'periodic job succeeded again');
          failures = 0;
        },
        (err) => {
          failures++;
          options.logger.warn({ err, job: options.name }, 'periodic job failed; retrying next interval');
        },
      )
      .finally(() => {
        if (!stopped) timer = setTimeout(tick, options.intervalMs);
      });
  };
  return {
    start() {
      stopped = false;
      stopping = new AbortController();
      tick();
    },
    async stop() {
      stopped = true;
      clearTimeout(timer);
      stopping.abort();
      await running;
    },
    runOnce: () => options.run(new AbortController().signal),
  };
}
