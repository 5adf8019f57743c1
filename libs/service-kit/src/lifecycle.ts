import type { Logger } from 'pino';

/** What every app's `createXxx(deps)` returns, so tests and the launcher can run it in-process. */
export interface Service {
  start(): Promise<void>;
  stop(): Promise<void>;
}

/**
 * Resources to release on stop, closed in reverse order of acquisition. A failing close is logged
 * and the others still close.
 */
export class Closer {
  private readonly steps: Array<{ name: string; close: () => Promise<unknown> | unknown }> = [];

  constructor(private readonly logger?: Logger) {}

  add(name: string, close: () => Promise<unknown> | unknown): void {
    this.steps.push({ name, close });
  }

  async closeAll(): Promise<void> {
    while (this.steps.length > 0) {
      const step = this.steps.pop()!;
      try {
        await step.close();
      } catch (err) {
        this.logger?.warn({ err, resource: step.name }, 'closing failed');
      }
    }
  }
}

export interface RunOptions {
  logger: Logger;
  shutdownTimeoutMs: number;
  /** Called first on a signal, before `stop()`: stop accepting traffic. */
  onShutdownStarted?: () => void;
  exit?: (code: number) => void;
}

/**
 * Starts a service and stops it on SIGTERM/SIGINT: stop accepting, drain, close clients, and exit
 * before the deadline (forcing exit 1 if draining hangs).
 */
export async function runService(service: Service, options: RunOptions): Promise<void> {
  const { logger } = options;
  const exit = options.exit ?? ((code: number) => process.exit(code));
  const signals = stopOnSignals(() => service.stop(), {
    logger,
    deadlineMs: options.shutdownTimeoutMs,
    onShutdownStarted: options.onShutdownStarted,
    exit,
  });
  logUnhandledRejections(logger);

  try {
    await service.start();
  } catch (err) {
    if (!signals.claim()) return; // a signal is stopping it already, with its own deadline
    logger.fatal({ err }, 'start failed');
    await stopWithinDeadline(() => service.stop(), logger, options.shutdownTimeoutMs, exit);
    exit(1);
  }
}

export interface SignalStopOptions {
  logger: Logger;
  /** How long the stop may take before the process exits 1. */
  deadlineMs: number;
  /** Called first on a signal, before `stop()`. */
  onShutdownStarted?: () => void;
  exit?: (code: number) => void;
}

const STOP_SIGNALS = ['SIGTERM', 'SIGINT'] as const;

/**
 * The first SIGTERM or SIGINT runs `stop`, then exits: 0, or 1 when the stop failed or passed the
 * deadline. Both listeners go with it, so a second signal of either kind ends the process at once
 * (Node's default: a second Ctrl-C on a stop that hangs). `claim()` takes the stop for another
 * reason (a failed start), so that no signal starts a second one: false when a signal has it already.
 */
export function stopOnSignals(stop: () => Promise<void>, options: SignalStopOptions): { claim(): boolean } {
  const { logger } = options;
  const exit = options.exit ?? ((code: number) => process.exit(code));
  let claimed = false;
  const claim = () => {
    if (claimed) return false;
    claimed = true;
    for (const [i, signal] of STOP_SIGNALS.entries()) process.off(signal, listeners[i]);
    return true;
  };
  const stopAndExit = async (signal: string) => {
    logger.info({ signal }, 'shutting down');
    options.onShutdownStarted?.();
    const clean = await stopWithinDeadline(stop, logger, options.deadlineMs, exit);
    if (clean) logger.info('stopped');
    exit(clean ? 0 : 1);
  };
  const listeners = STOP_SIGNALS.map((signal) => {
    const listener = () => {
      if (claim()) void stopAndExit(signal);
    };
    process.on(signal, listener);
    return listener;
  });
  return { claim };
}

/** Runs `stop`, exiting 1 at the deadline if that hangs; resolves whether it stopped cleanly. */
async function stopWithinDeadline(
  stop: () => Promise<void>,
  logger: Logger,
  deadlineMs: number,
  exit: (code: number) => void,
): Promise<boolean> {
  // Not unref'd: a stop stuck on a promise nothing will settle must not end in a quiet exit 0.
  const deadline = setTimeout(() => {
    logger.error({ timeoutMs: deadlineMs }, 'shutdown deadline passed, exiting');
    exit(1);
  }, deadlineMs);
  try {
    await stop();
    return true;
  } catch (err) {
    logger.error({ err }, 'shutdown failed');
    return false;
  } finally {
    clearTimeout(deadline);
  }
}

/**
 * A rejection nothing handled is logged, not fatal: Node's default would end the process (in a
 * one-process fleet, every service with it) for a promise some code path forgot to await.
 */
export function logUnhandledRejections(logger: Logger): void {
  process.on('unhandledRejection', (reason) => logger.error({ err: reason }, 'unhandled rejection'));
}

/** Something a service runs besides its HTTP server: a consumer, a timer loop, a store to prepare. */
export interface Worker {
  start?(): Promise<unknown> | unknown;
  stop?(): Promise<unknown> | unknown;
}

export interface Listener {
  listen(options: { port: number; host: string }): Promise<unknown>;
  close(): Promise<unknown>;
}

/**
 * The life every service shares: the server listens, then workers start in order, the service
 * reporting not-ready (check `startup`) until they have; on stop the service reports not-ready,
 * the server closes, then the workers stop in reverse order. Listening first answers `/healthz`
 * through a long start (a migration, another replica's migration lock): a liveness or startup
 * probe must not kill a process that is working, or a long migration would never finish.
 */
export function serviceLifecycle(
  server: Listener,
  address: { port: number; host?: string },
  readiness: { markDraining(): void; register(name: string, check: () => unknown): void },
  workers: Worker[],
): Service {
  let started = false;
  let stopped = false;
  readiness.register('startup', () => {
    if (!started) throw new Error('starting: preparing storage and consumers');
  });
  return {
    async start() {
      await server.listen({ port: address.port, host: address.host ?? '0.0.0.0' });
      for (const worker of workers) {
        if (stopped) return; // stopped during the start: start nothing more
        await worker.start?.();
        // stop() ran while this worker was starting (its stop came before its start ended): again.
        if (stopped) return void (await worker.stop?.());
      }
      started = true;
    },
    async stop() {
      stopped = true;
      readiness.markDraining();
      await server.close();
      for (const worker of [...workers].reverse()) await worker.stop?.();
    },
  };
}
