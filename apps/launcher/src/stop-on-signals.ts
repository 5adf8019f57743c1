import type { Logger } from 'pino';

const SIGNALS = ['SIGINT', 'SIGTERM'] as const;

/**
 * `npm start`'s Ctrl-C: the first SIGINT or SIGTERM runs `stop` and exits 0 (1 when it failed or
 * passed `deadlineMs`). Both listeners go with it, so a second signal ends the process at once
 * (Node's default) when a stop hangs.
 */
export function stopOnSignals(stop: () => Promise<void>, logger: Logger, deadlineMs = 30_000): void {
  const listeners = SIGNALS.map((signal) => {
    const listener = () => {
      for (const [i, other] of SIGNALS.entries()) process.off(other, listeners[i]);
      void stopAndExit(signal);
    };
    process.on(signal, listener);
    return listener;
  });
  const stopAndExit = async (signal: string) => {
    logger.info({ signal }, 'stopping the fleet');
    setTimeout(() => process.exit(1), deadlineMs).unref();
    try {
      await stop();
    } catch (err) {
      logger.error({ err }, 'the fleet did not stop cleanly');
      process.exit(1);
    }
    logger.info('stopped');
    process.exit(0);
  };
}
