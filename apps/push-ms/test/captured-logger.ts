import { Writable } from 'node:stream';
import pino from 'pino';

/** A logger whose JSON lines the test reads back. */
export function capturedLogger() {
  const lines: Array<Record<string, unknown>> = [];
  const stream = new Writable({
    write(chunk: Buffer, _encoding, done) {
      lines.push(
        ...chunk
          .toString()
          .split('\n')
          .filter(Boolean)
          .map((line) => JSON.parse(line) as Record<string, unknown>),
      );
      done();
    },
  });
  return { logger: pino({ level: 'info' }, stream), lines };
}
