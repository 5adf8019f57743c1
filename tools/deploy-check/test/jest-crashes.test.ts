import { crashedSuites } from '../src/jest-crashes';

const suite = (name: string, status: 'passed' | 'failed', message = '', failedAssertions = 0) => ({
  name: `/repo/${name}`,
  status,
  message,
  assertionResults: [
    ...Array.from({ length: failedAssertions }, () => ({ status: 'failed' })),
    { status: 'passed' },
  ],
});
// What Jest wrote for the suite of the run that crashed (CI, 2026-12-06).
const killed =
  '  ● Test suite failed to run\n\n    A jest worker process (pid=10121) was terminated by another process: signal=SIGSEGV, exitCode=null.';

describe('crashedSuites', () => {
  it('names the suites whose worker was killed by a signal when nothing else failed', () => {
    const results = {
      testResults: [
        suite('apps/launcher/test/service-thread.test.ts', 'failed', killed),
        suite('apps/a/test/a.test.ts', 'passed'),
      ],
    };
    expect(crashedSuites(results, '/repo')).toEqual({
      crashed: ['apps/launcher/test/service-thread.test.ts'],
    });
  });

  it('refuses to repeat a run where a test failed, beside a crash or alone', () => {
    const failing = suite('apps/b/test/b.test.ts', 'failed', 'expect(received).toBe(expected)', 1);
    expect(
      crashedSuites({ testResults: [suite('apps/a/test/a.test.ts', 'failed', killed), failing] }, '/repo'),
    ).toEqual({ refused: 'failed, not crashed: apps/b/test/b.test.ts' });
    // A crash message with a failed assertion in the same suite is a failure, not only a crash.
    expect(
      crashedSuites({ testResults: [suite('apps/c/test/c.test.ts', 'failed', killed, 1)] }, '/repo'),
    ).toEqual({
      refused: 'failed, not crashed: apps/c/test/c.test.ts',
    });
    expect(crashedSuites({ testResults: [suite('apps/a/test/a.test.ts', 'passed')] }, '/repo')).toEqual({
      refused: 'no suite crashed (the run failed elsewhere)',
    });
  });
});
