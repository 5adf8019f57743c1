import pino, { Logger, LoggerOptions } from 'pino';

export type { Logger } from 'pino';

/** Structured JSON logs with the service name on every line. */
export function createLogger(service: string, options: LoggerOptions = {}): Logger {
  return pino({
    level: 'info',
    base: { service },
    timestamp: pino.stdTimeFunctions.isoTime,
    redact: { paths: ['req.headers.authorization', '*.token', '*.password'], censor: '[redacted]' },
    ...options,
  });
}

/** A logger that writes nothing: for tests that do not look at logs. */
export function silentLogger(): Logger {
  return pino({ level: 'silent' });
}
