import pino, { DestinationStream, Logger, LoggerOptions } from 'pino';

export type { Logger } from 'pino';

/** Structured JSON logs with the service name on every line, to stdout unless `destination` says otherwise. */
export function createLogger(
  service: string,
  options: LoggerOptions = {},
  destination?: DestinationStream,
): Logger {
  const settings: LoggerOptions = {
    level: 'info',
    base: { service },
    timestamp: pino.stdTimeFunctions.isoTime,
    redact: { paths: ['req.headers.authorization', '*.token', '*.password'], censor: '[redacted]' },
    ...options,
  };
  return destination ? pino(settings, destination) : pino(settings);
}

/** A logger that writes nothing: for tests that do not look at logs. */
export function silentLogger(): Logger {
  return pino({ level: 'silent' });
}
