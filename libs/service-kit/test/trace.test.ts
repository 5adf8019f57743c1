import pino from 'pino';
import { CommonConfig, ConfigError, createMessageTrace, loadConfig, NO_TRACE, tracedUsers } from '../src';
import { Type } from '@sinclair/typebox';

/** A logger at `level` whose lines land in `lines`, parsed. */
function capturing(level: string) {
  const lines: Array<Record<string, unknown>> = [];
  const logger = pino({ level }, { write: (line: string) => void lines.push(JSON.parse(line)) });
  return { logger, lines };
}

describe('message trace', () => {
  it("logs a traced message's hops even where LOG_LEVEL is warn, marked trace:true", () => {
    const { logger, lines } = capturing('warn');
    const trace = createMessageTrace(['alice'], logger);
    logger.info('not written at warn');
    trace.hop('published', { mids: ['alice:c1'] });
    expect(lines).toEqual([
      expect.objectContaining({
        level: 30,
        trace: true,
        hop: 'published',
        mids: ['alice:c1'],
        msg: 'trace: published',
      }),
    ]);
  });

  it('names the traced users among those given, once each; none when nobody is traced', () => {
    const trace = createMessageTrace(['alice', 'carol'], capturing('info').logger);
    expect(trace.on).toBe(true);
    expect(trace.tracedAmong(['bob', 'alice', undefined, 'alice', 'carol'])).toEqual(['alice', 'carol']);
    expect(trace.tracedAmong(['bob'])).toEqual([]);
    expect(createMessageTrace([], capturing('info').logger)).toBe(NO_TRACE);
    expect(NO_TRACE.on).toBe(false);
  });

  it('reads TRACE_USERS as a comma-separated list, blanks ignored, at most 100 users', () => {
    expect(tracedUsers(' alice, ,bob ')).toEqual(['alice', 'bob']);
    expect(tracedUsers('')).toEqual([]);
    const schema = Type.Object({ TRACE_USERS: CommonConfig.TRACE_USERS });
    const ids = (n: number) => Array.from({ length: n }, (_, i) => `u${i}`).join(',');
    expect(loadConfig('svc', schema, { TRACE_USERS: ids(100) }).TRACE_USERS).toBe(ids(100));
    expect(() => loadConfig('svc', schema, { TRACE_USERS: ids(101) })).toThrow(ConfigError);
  });
});
